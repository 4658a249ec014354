//! `strata pool rebalance` through a real daemon: one-copy volumes written with nbdcopy on a
//! pool of one file device, a device added, a dry run that changes nothing (the store's
//! revision, every copy), a real round whose first move fails on purpose (the test-only fault
//! point: the volume stays whole where it was) and whose other moves finish, a second round
//! that moves the rest, the bytes checked with qemu-img over NBD, the spread lower, the
//! events, and bad input refused with stable codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

fn cli(d: &Daemon, token: &str, args: &[&str]) -> std::process::Output {
    strata()
        .args(args)
        .args(["--endpoint", &d.url, "--token", token])
        .output()
        .unwrap()
}

fn cli_json(d: &Daemon, token: &str, args: &[&str]) -> (bool, Value) {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let o = cli(d, token, &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.success(), v)
}

fn file_device(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    p
}

fn copies(d: &Daemon, admin: &str, id: &str) -> Vec<String> {
    let (s, v) = d.call("GET", &format!("/v1/volumes/{id}"), admin, None);
    assert_eq!(s, 200, "{v}");
    v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// `qemu-img compare`: the export at `uri` holds exactly the bytes of `file`.
fn same(file: &Path, uri: &str) {
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(file)
        .arg(uri)
        .output()
        .expect("qemu-img");
    assert!(
        o.status.success(),
        "identical: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The pool's largest fill difference between two devices, from `pool show`.
fn fill_spread(d: &Daemon, admin: &str) -> f64 {
    let (_, p) = d.call("GET", "/v1/pools/p", admin, None);
    let fills: Vec<f64> = p["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["allocated"].as_f64().unwrap() / x["capacity"].as_f64().unwrap())
        .collect();
    let hi = fills.iter().cloned().fold(f64::MIN, f64::max);
    let lo = fills.iter().cloned().fold(f64::MAX, f64::min);
    hi - lo
}

#[test]
fn a_pool_rebalances_onto_an_added_device_without_losing_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start_env(&data, &[], None, &[("STRATA_TEST_REBALANCE_FAIL", "1")]);
    let admin = d.admin();
    let devdir = data.join("devices");
    let a = file_device(&devdir, "a.img");
    let o = cli(
        &d,
        &admin,
        &["pool", "create", "p", "--device", a.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Four one-copy volumes, 16 MiB of random bytes each, all on the one device.
    let mut vols = vec![];
    for k in 0..4 {
        let (s, v) = d.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": format!("v{k}"), "size": "32M", "pool": "p"})),
        );
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let (_, at) = d.call(
            "POST",
            &format!("/v1/volumes/{id}/attachments"),
            &admin,
            None,
        );
        let uri = at["uri"].as_str().unwrap().to_string();
        let src = dir.path().join(format!("v{k}.img"));
        let s = Command::new("head")
            .args(["-c", &(16u64 << 20).to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(&src).unwrap())
            .status()
            .unwrap();
        assert!(s.success());
        // Half the volume random, half zeros: 16 MiB allocated.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let s = Command::new("nbdcopy")
            .args(["--flush"])
            .arg(&src)
            .arg(&uri)
            .status()
            .expect("nbdcopy");
        assert!(s.success());
        vols.push((id, uri, src));
    }
    let b = file_device(&devdir, "b.img");
    let o = cli(
        &d,
        &admin,
        &["pool", "add-device", "p", b.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spread0 = fill_spread(&d, &admin);
    assert!(spread0 > 0.1, "uneven: {spread0}");
    let before: Vec<Vec<String>> = vols.iter().map(|v| copies(&d, &admin, &v.0)).collect();

    // Dry run: the plan, nothing changed (two in a row answer the same revision).
    let (ok, dry) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    assert!(ok, "{dry}");
    let moves = dry["moves"].as_array().unwrap().clone();
    assert_eq!(moves.len(), 2, "{dry}");
    assert!(moves.iter().all(|m| m["state"] == "planned"), "{dry}");
    assert!(
        dry["spread_after"].as_f64() < dry["spread_before"].as_f64(),
        "{dry}"
    );
    let (_, again) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    assert_eq!(
        again["revision"], dry["revision"],
        "a dry run writes nothing"
    );
    assert_eq!(again["moves"], dry["moves"]);
    let now: Vec<Vec<String>> = vols.iter().map(|v| copies(&d, &admin, &v.0)).collect();
    assert_eq!(now, before);

    // For real: the first move fails on purpose (reported, the CLI fails); the other is
    // carried out and waited for.
    let (ok, real) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--max-moves", "2"]);
    assert!(!ok, "a failed move fails the command: {real}");
    let states: Vec<&str> = real["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "moved"], "{real}");
    let failed = &real["moves"][0];
    assert!(
        failed["error"].as_str().unwrap().contains("on purpose"),
        "{real}"
    );
    let moved = &real["moves"][1];
    for (id, uri, src) in &vols {
        let at = copies(&d, &admin, id);
        if id == failed["volume"].as_str().unwrap() {
            assert_eq!(
                at,
                vec![failed["from"].as_str().unwrap()],
                "stays where it was"
            );
        }
        if id == moved["volume"].as_str().unwrap() {
            assert_eq!(at, vec![moved["to"].as_str().unwrap()], "moved");
        }
        same(src, uri);
    }

    // A second round moves what is left to move.
    let (ok, second) = cli_json(&d, &admin, &["pool", "rebalance", "p"]);
    assert!(ok, "{second}");
    assert_eq!(second["moves"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["moves"][0]["state"], "moved", "{second}");
    for (_, uri, src) in &vols {
        same(src, uri);
    }
    let spread1 = fill_spread(&d, &admin);
    assert!(spread1 < spread0 / 2.0, "{spread1} after, {spread0} before");
    let (_, done) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    assert!(done["moves"].as_array().unwrap().is_empty(), "{done}");
    // Two of the four volumes left the first device.
    let on_b = vols
        .iter()
        .filter(|v| copies(&d, &admin, &v.0) != before[0])
        .count();
    assert_eq!(on_b, 2);

    // The events of the rounds and the moves.
    let (_, ev) = d.call("GET", "/v1/events?limit=1000", &admin, None);
    let kinds: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().or(e["kind"].as_str()).unwrap_or(""))
        .collect();
    for k in [
        "pool.rebalanced",
        "volume.rebalance_failed",
        "volume.move_started",
        "volume.moved",
    ] {
        assert!(kinds.contains(&k), "{k} in {ev}");
    }

    // Bad input: stable codes, nothing changes.
    let rev = done["revision"].clone();
    let bad = |path: &str, token: &str, body: Value| -> (u16, String) {
        let (s, v) = d.call("POST", path, token, Some(body));
        (s, v["error"]["code"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        bad("/v1/pools/nope/rebalance", &admin, json!({"dry_run": true})),
        (404, "pool_not_found".into())
    );
    for n in [json!(0), json!(65), json!(1u64 << 40)] {
        assert_eq!(
            bad("/v1/pools/p/rebalance", &admin, json!({"max_moves": n})),
            (400, "invalid_argument".into()),
            "max_moves {n}"
        );
    }
    assert_eq!(
        bad("/v1/pools/p/rebalance", &admin, json!({"moves": 1})).0,
        400,
        "unknown field"
    );
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "acme"})));
    let (s, t) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "acme", "role": "tenant-admin"})),
    );
    assert_eq!(s, 201, "{t}");
    let tenant = t["token"].as_str().unwrap();
    assert_eq!(
        bad("/v1/pools/p/rebalance", tenant, json!({})),
        (403, "forbidden".into())
    );
    let o = cli(&d, &admin, &["pool", "rebalance", "p", "--max-moves", "0"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid_argument"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, last) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    // The tenant and token made above wrote; the refusals did not move a copy.
    assert!(last["revision"].as_u64() >= rev.as_u64());
    assert!(last["moves"].as_array().unwrap().is_empty(), "{last}");
    // After a restart each volume is still where its record says, with its bytes.
    d.stop();
    let d = Daemon::start(&data);
    for (_, uri, src) in &vols {
        same(src, uri);
    }
    d.stop();
}

/// Writes `len` random bytes (then zeros up to 32 MiB) into `file` and copies it onto `uri`.
fn fill(file: &Path, uri: &str, len: u64) {
    let s = Command::new("head")
        .args(["-c", &len.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(file).unwrap())
        .status()
        .unwrap();
    assert!(s.success());
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let s = Command::new("nbdcopy")
        .args(["--flush"])
        .arg(file)
        .arg(uri)
        .status()
        .expect("nbdcopy");
    assert!(s.success());
}

/// Waits (two minutes at most) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn replicated_copies_move_with_writes_during_a_failed_move_and_a_restart_mid_way() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // A slow resync (4 MiB/s: a 32 MiB copy takes 8 s) so that writes and a kill land while
    // the new copies fill.
    let slow = ["--resync-rate", "4M"];
    let d = Daemon::start_env(&data, &slow, None, &[("STRATA_TEST_REBALANCE_FAIL", "1")]);
    let admin = d.admin();
    let devdir = data.join("devices");
    let (a, b) = (file_device(&devdir, "a.img"), file_device(&devdir, "b.img"));
    let o = cli(
        &d,
        &admin,
        &[
            "pool",
            "create",
            "p",
            "--device",
            a.to_str().unwrap(),
            "--device",
            b.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Three two-copy volumes, 16 MiB of random bytes each, on devices a and b.
    let mut vols = vec![];
    for k in 0..3 {
        let (s, v) = d.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": format!("r{k}"), "size": "32M", "pool": "p", "replicas": 2})),
        );
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let (_, at) = d.call(
            "POST",
            &format!("/v1/volumes/{id}/attachments"),
            &admin,
            None,
        );
        let uri = at["uri"].as_str().unwrap().to_string();
        let src = dir.path().join(format!("r{k}.img"));
        fill(&src, &uri, 16 << 20);
        vols.push((id, uri, src));
    }
    let c = file_device(&devdir, "c.img");
    let o = cli(
        &d,
        &admin,
        &["pool", "add-device", "p", c.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before: Vec<Vec<String>> = vols.iter().map(|v| copies(&d, &admin, &v.0)).collect();
    let health = |d: &Daemon, id: &str| {
        let (_, v) = d.call("GET", &format!("/v1/volumes/{id}"), &admin, None);
        v["healthy_copies"].as_u64().unwrap()
    };

    // Round 1, not waited for: the first move fails on purpose, the second starts.
    let (ok, r1) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--no-wait"]);
    let moves = r1["moves"].as_array().unwrap().clone();
    assert!(!ok, "a failed move fails the command: {r1}");
    assert_eq!(moves.len(), 2, "{r1}");
    assert_eq!(moves[0]["state"], "failed", "{r1}");
    assert_eq!(moves[1]["state"], "started", "{r1}");
    let vol_of = |m: &Value| {
        vols.iter()
            .position(|v| v.0 == m["volume"].as_str().unwrap())
            .unwrap()
    };
    let (kf, km) = (vol_of(&moves[0]), vol_of(&moves[1]));
    assert_ne!(kf, km);
    // While the copy moves: a client write over the whole volume, and two copies in step.
    fill(&vols[km].2, &vols[km].1, 24 << 20);
    let mut saw_moving = false;
    wait_for("the move finishes", || {
        assert_eq!(health(&d, &vols[km].0), 2, "a copy short during the move");
        let at = copies(&d, &admin, &vols[km].0);
        saw_moving |= at == before[km];
        at.contains(&moves[1]["to"].as_str().unwrap().to_string())
    });
    assert!(saw_moving, "the write was made while the copy moved");
    let at = copies(&d, &admin, &vols[km].0);
    let slot = moves[1]["copy"].as_u64().unwrap() as usize;
    assert_eq!(at[slot], moves[1]["to"].as_str().unwrap());
    assert_ne!(at[0], at[1], "two copies on one device");
    assert_eq!(
        copies(&d, &admin, &vols[kf].0),
        before[kf],
        "the failed move stays"
    );
    for (_, uri, src) in &vols {
        same(src, uri);
    }
    wait_for("healthy after the move", || health(&d, &vols[km].0) == 2);

    // Round 2 moves the volume whose move failed; the daemon is killed while it fills.
    let (ok, r2) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--no-wait"]);
    assert!(ok, "{r2}");
    let m2 = r2["moves"].as_array().unwrap().clone();
    assert!(!m2.is_empty(), "{r2}");
    assert!(m2.iter().all(|m| m["state"] == "started"), "{r2}");
    let k2 = vol_of(&m2[0]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(copies(&d, &admin, &vols[k2].0), before[k2], "still filling");
    d.kill9();
    // After the restart the volume is on its old copies (its record), whole and in step; the
    // new copy's remains are swept, and a round moves it for good.
    let d = Daemon::start_with(&data, &slow);
    let admin = d.admin();
    assert_eq!(copies(&d, &admin, &vols[k2].0), before[k2]);
    for (_, uri, src) in &vols {
        same(src, uri);
    }
    wait_for("in step after the restart", || health(&d, &vols[k2].0) == 2);
    let (ok, r3) = cli_json(&d, &admin, &["pool", "rebalance", "p"]);
    assert!(ok, "{r3}");
    let m3 = r3["moves"].as_array().unwrap();
    assert!(!m3.is_empty(), "{r3}");
    assert!(m3.iter().all(|m| m["state"] == "moved"), "{r3}");
    for (id, uri, src) in &vols {
        same(src, uri);
        let at = copies(&d, &admin, id);
        assert_ne!(at[0], at[1], "two copies on one device");
    }
    let (_, ev) = d.call("GET", "/v1/events?limit=1000", &admin, None);
    let kinds: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().or(e["kind"].as_str()).unwrap_or(""))
        .collect();
    for k in [
        "volume.rebalance_failed",
        "volume.move_started",
        "volume.moved",
    ] {
        assert!(kinds.contains(&k), "{k} in {ev}");
    }
    d.stop();
}

/// The kinds of the daemon's events so far.
fn event_kinds(d: &Daemon, admin: &str) -> Vec<String> {
    let (_, ev) = d.call("GET", "/v1/events?limit=1000", admin, None);
    ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["type"]
                .as_str()
                .or(e["kind"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn the_rebalance_timer_runs_a_round_by_itself_only_above_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // A threshold of 90%: the spread a device added makes here (about 25%) is below it.
    let high = ["--rebalance-interval", "1s", "--rebalance-threshold", "90"];
    let d = Daemon::start_with(&data, &high);
    let admin = d.admin();
    let devdir = data.join("devices");
    let a = file_device(&devdir, "a.img");
    let o = cli(
        &d,
        &admin,
        &["pool", "create", "p", "--device", a.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut vols = vec![];
    for k in 0..4 {
        let (s, v) = d.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": format!("t{k}"), "size": "32M", "pool": "p"})),
        );
        assert_eq!(s, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        let (_, at) = d.call(
            "POST",
            &format!("/v1/volumes/{id}/attachments"),
            &admin,
            None,
        );
        let uri = at["uri"].as_str().unwrap().to_string();
        let src = dir.path().join(format!("t{k}.img"));
        fill(&src, &uri, 16 << 20);
        vols.push((id, uri, src));
    }
    let b = file_device(&devdir, "b.img");
    let o = cli(
        &d,
        &admin,
        &["pool", "add-device", "p", b.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before: Vec<Vec<String>> = vols.iter().map(|v| copies(&d, &admin, &v.0)).collect();
    let (_, plan) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    let spread = plan["spread_before"].as_f64().unwrap();
    assert!(spread > 0.1 && spread < 0.9, "{plan}");
    // Four ticks: no round, nothing moved.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !event_kinds(&d, &admin)
            .iter()
            .any(|k| k == "pool.rebalanced"),
        "a round ran below the threshold"
    );
    let now: Vec<Vec<String>> = vols.iter().map(|v| copies(&d, &admin, &v.0)).collect();
    assert_eq!(now, before);
    d.stop();

    // The default threshold (10%): the timer runs a round by itself and the moves finish.
    let d = Daemon::start_with(&data, &["--rebalance-interval", "1s"]);
    wait_for("a timed round moved copies", || {
        let kinds = event_kinds(&d, &admin);
        kinds.iter().any(|k| k == "pool.rebalanced") && kinds.iter().any(|k| k == "volume.moved")
    });
    wait_for("the moves recorded", || {
        vols.iter()
            .filter(|v| copies(&d, &admin, &v.0) != before[0])
            .count()
            == 2
    });
    for (_, uri, src) in &vols {
        same(src, uri);
    }
    // Balanced now: later ticks start no more rounds with moves.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (_, after) = cli_json(&d, &admin, &["pool", "rebalance", "p", "--dry-run"]);
    assert!(after["moves"].as_array().unwrap().is_empty(), "{after}");
    let rounds = event_kinds(&d, &admin)
        .iter()
        .filter(|k| *k == "pool.rebalanced")
        .count();
    assert_eq!(rounds, 1, "one round was enough");
    d.stop();
}
