//! Snapshot schedules against a real daemon, through the CLI and the API: a schedule every
//! second keeps exactly its newest N and never touches a snapshot made by hand; a schedule of
//! several volumes takes checkpoint groups (one instant, read back over NBD); a schedule
//! survives a restart and takes one run, not a burst, for the slots it missed; pause stops
//! it; a run on a deleted volume records `last_error` and one event while other schedules run
//! on; bad input answers stable codes and changes nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits (at most `secs`) until `f` gives a value.
fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn show(c: &Cli<'_>, name: &str, tenant: &str) -> Value {
    c.json(&["snapshot", "schedule", "show", name, "--tenant", tenant])
}

/// The snapshots of `volume` (in `tenant`) the schedule `id` took.
fn taken_by(c: &Cli<'_>, volume: &str, tenant: &str, id: &str) -> Vec<Value> {
    c.json(&["snapshot", "list", volume, "--tenant", tenant])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["schedule"] == id)
        .cloned()
        .collect()
}

/// Whether `name` is `PREFIX-YYYYMMDDTHHMMSSZ`.
fn stamped(name: &str, prefix: &str) -> bool {
    let Some(stamp) = name.strip_prefix(&format!("{prefix}-")) else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

#[test]
fn a_schedule_every_second_keeps_its_newest_three_and_never_a_hand_made_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    c.ok(&["tenant", "create", "ml"]);
    c.ok(&["volume", "create", "v", "--size", "8M", "--tenant", "ml"]);
    c.ok(&["snapshot", "create", "v", "manual", "--tenant", "ml"]);
    let sc = c.json(&[
        "snapshot", "schedule", "create", "s1", "--volume", "v", "--every", "1s", "--keep", "3",
        "--tenant", "ml",
    ]);
    assert_eq!(
        (&sc["interval"], &sc["keep"], &sc["paused"], &sc["taken"]),
        (&json!("1s"), &json!(3), &json!(false), &json!(0)),
        "{sc}"
    );
    let id = s(&sc, "id");
    // The first snapshot it takes (retention deletes it later).
    let first = wait(10, "the first scheduled snapshot", || {
        taken_by(&c, "v", "ml", &id).first().map(|x| s(x, "name"))
    });
    assert!(stamped(&first, "s1"), "{first}");
    wait(20, "five runs", || {
        (show(&c, "s1", "ml")["taken"].as_u64().unwrap() >= 5).then_some(())
    });
    // Paused: once the set answers, nothing more is taken.
    let paused = c.json(&[
        "snapshot", "schedule", "set", "s1", "--paused", "true", "--tenant", "ml",
    ]);
    assert_eq!(paused["paused"], true, "{paused}");
    let shown = show(&c, "s1", "ml");
    let taken = shown["taken"].as_u64().unwrap();
    assert!(taken >= 5, "{shown}");
    assert_eq!(shown["last_error"], Value::Null, "{shown}");
    let kept = taken_by(&c, "v", "ml", &id);
    let mut names: Vec<String> = kept.iter().map(|x| s(x, "name")).collect();
    names.sort();
    assert_eq!(names.len(), 3, "exactly the newest 3 are kept: {names:?}");
    assert!(names.iter().all(|n| stamped(n, "s1")), "{names:?}");
    assert!(
        names.iter().all(|n| *n > first),
        "the oldest went first: {first} is kept in {names:?}"
    );
    // The hand-made snapshot is untouched, and the usage counts what is left.
    let all = c.json(&["snapshot", "list", "v", "--tenant", "ml"]);
    let manual: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "manual")
        .collect();
    assert_eq!(manual.len(), 1, "{all}");
    assert_eq!(manual[0]["schedule"], Value::Null);
    let t = c.json(&["tenant", "show", "ml"]);
    assert_eq!(t["usage"]["snapshots"], 4, "{t}");
    assert_eq!(t["usage"]["snapshot_schedules"], 1, "{t}");
    // `snapshot list` names the schedule that took each one.
    let table = c.ok(&["snapshot", "list", "v", "--tenant", "ml"]);
    assert!(
        table.lines().next().unwrap().contains("SCHEDULE"),
        "{table}"
    );
    for n in &names {
        let line = table.lines().find(|l| l.starts_with(n.as_str())).unwrap();
        assert!(line.split_whitespace().any(|w| w == "s1"), "{table}");
    }
    // Paused, it stays where it is.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(show(&c, "s1", "ml")["taken"], taken);
    assert_eq!(taken_by(&c, "v", "ml", &id).len(), 3);
    // Resumed, it runs again; deleted, what it kept stays.
    c.ok(&[
        "snapshot", "schedule", "set", "s1", "--paused", "false", "--tenant", "ml",
    ]);
    wait(10, "a run after the resume", || {
        (show(&c, "s1", "ml")["taken"].as_u64().unwrap() > taken).then_some(())
    });
    c.ok(&["snapshot", "schedule", "delete", "s1", "--tenant", "ml"]);
    assert_eq!(taken_by(&c, "v", "ml", &id).len(), 3);
    let (ok, out) = c.run(&["snapshot", "schedule", "show", "s1", "--tenant", "ml"]);
    assert!(!ok && out.contains("snapshot_schedule_not_found"), "{out}");
    let t = c.json(&["tenant", "show", "ml"]);
    assert_eq!(t["usage"]["snapshot_schedules"], 0, "{t}");
}

#[test]
fn a_schedule_of_several_volumes_takes_checkpoint_groups_of_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    c.ok(&["tenant", "create", "ml"]);
    let qemu_io = |uri: &str, cmd: &str, ro: bool| {
        let mut q = std::process::Command::new("qemu-io");
        if ro {
            q.arg("-r");
        }
        let o = q
            .args(["-f", "raw", "-c", cmd, uri.trim()])
            .output()
            .expect("qemu-io (qemu-utils) is installed");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && !out.contains("failed"),
            "qemu-io {cmd}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    for (vol, byte) in [("shard0", 0x10), ("shard1", 0x11)] {
        c.ok(&["volume", "create", vol, "--size", "8M", "--tenant", "ml"]);
        let uri = c.ok(&["volume", "attach", vol, "--tenant", "ml"]);
        qemu_io(&uri, &format!("write -P {byte} 0 1M"), false);
    }
    let sc = c.json(&[
        "snapshot", "schedule", "create", "ckpt", "--volume", "shard0", "--volume", "shard1",
        "--every", "1s", "--keep", "2", "--tenant", "ml",
    ]);
    let id = s(&sc, "id");
    assert_eq!(sc["volumes"].as_array().unwrap().len(), 2, "{sc}");
    wait(20, "three runs", || {
        (show(&c, "ckpt", "ml")["taken"].as_u64().unwrap() >= 3).then_some(())
    });
    c.ok(&[
        "snapshot", "schedule", "set", "ckpt", "--paused", "true", "--tenant", "ml",
    ]);
    let shown = show(&c, "ckpt", "ml");
    assert_eq!(shown["last_error"], Value::Null, "{shown}");
    let groups: Vec<Value> = c.json(&["snapshot", "list-groups", "--tenant", "ml"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["schedule"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(groups.len(), 2, "the newest 2 groups are kept: {groups:?}");
    let admin = d.admin();
    for g in &groups {
        let name = s(g, "name");
        assert!(stamped(&name, "ckpt"), "{name}");
        assert_eq!(g["ready"], true);
        let members = g["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "{g}");
        // Every member is the group's: its name, its group, its schedule, one creation time.
        let mut created = Vec::new();
        for m in members {
            let (st, snap) = d.call(
                "GET",
                &format!("/v1/snapshots/{}", s(m, "snapshot")),
                &admin,
                None,
            );
            assert_eq!(st, 200, "{snap}");
            assert_eq!(
                (&snap["name"], &snap["group"], &snap["schedule"]),
                (&g["name"], &g["id"], &json!(id)),
                "{snap}"
            );
            created.push(snap["created"].clone());
        }
        assert_eq!(created[0], created[1], "{g}");
        // Each member holds its volume's data of that instant, read over NBD.
        for (vol, byte) in [("shard0", 0x10), ("shard1", 0x11)] {
            let uri = c.ok(&[
                "volume",
                "attach",
                &format!("{vol}@{name}"),
                "--tenant",
                "ml",
            ]);
            qemu_io(&uri, &format!("read -P {byte} 0 1M"), true);
        }
    }
    // A member is deleted only with its group, also when a schedule took it.
    let (ok, out) = c.run(&[
        "snapshot",
        "delete",
        "shard0",
        &s(&groups[0], "name"),
        "--tenant",
        "ml",
    ]);
    assert!(!ok && out.contains("snapshot_in_group"), "{out}");
}

#[test]
fn a_schedule_survives_a_restart_and_takes_one_run_not_a_burst_for_what_it_missed() {
    const EVERY: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    c.ok(&["tenant", "create", "ml"]);
    c.ok(&["volume", "create", "v", "--size", "8M", "--tenant", "ml"]);
    let sc = c.json(&[
        "snapshot", "schedule", "create", "s", "--volume", "v", "--every", "6s", "--keep", "20",
        "--tenant", "ml",
    ]);
    wait(15, "the first run", || {
        (show(&c, "s", "ml")["taken"].as_u64().unwrap() >= 1).then_some(())
    });
    let before = show(&c, "s", "ml");
    let was = before["taken"].as_u64().unwrap();
    d.stop();
    // Down for more than two intervals; back just after a slot of the cadence (slots are
    // `created + k * EVERY`), so the next slot is almost an interval away.
    let created = sc["created"].as_u64().unwrap();
    let back = created + (now() + 2 * EVERY + 1 - created).div_ceil(EVERY) * EVERY;
    let at = UNIX_EPOCH + Duration::from_millis(back * 1000 + 200);
    std::thread::sleep(at.duration_since(SystemTime::now()).unwrap());
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    let after = wait(5, "the run for the missed slots", || {
        let v = show(&c, "s", "ml");
        (v["taken"].as_u64().unwrap() > was).then_some(v)
    });
    assert!(now() < back + EVERY, "the daemon took too long to start");
    assert_eq!(after["id"], sc["id"], "{after}");
    assert_eq!(
        after["taken"],
        was + 1,
        "one run for all it missed: {after}"
    );
    assert!(after["last_run"].as_u64().unwrap() >= back, "{after}");
    assert_eq!(
        after["next_run"],
        back + EVERY,
        "the cadence goes on at its next slot: {after}"
    );
    // No burst: nothing more until that slot.
    std::thread::sleep(Duration::from_millis(1500));
    if now() < back + EVERY {
        assert_eq!(show(&c, "s", "ml")["taken"], was + 1);
    }
    wait(EVERY + 5, "the next slot's run", || {
        (show(&c, "s", "ml")["taken"].as_u64().unwrap() == was + 2).then_some(())
    });
    assert_eq!(taken_by(&c, "v", "ml", &s(&sc, "id")).len() as u64, was + 2);
}

#[test]
fn a_run_on_a_deleted_volume_records_its_error_and_one_event_and_others_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    c.ok(&["tenant", "create", "ml"]);
    for v in ["x", "y"] {
        c.ok(&["volume", "create", v, "--size", "8M", "--tenant", "ml"]);
    }
    let sx = c.json(&[
        "snapshot", "schedule", "create", "sx", "--volume", "x", "--every", "1s", "--keep", "2",
        "--tenant", "ml",
    ]);
    c.ok(&[
        "snapshot", "schedule", "create", "sy", "--volume", "y", "--every", "1s", "--keep", "2",
        "--tenant", "ml",
    ]);
    wait(10, "a run of sx", || {
        (show(&c, "sx", "ml")["taken"].as_u64().unwrap() >= 1).then_some(())
    });
    c.ok(&["volume", "delete", "x", "--force", "--tenant", "ml"]);
    let failed = wait(10, "sx's error", || {
        let v = show(&c, "sx", "ml");
        v["last_error"].is_string().then_some(v)
    });
    let why = s(&failed, "last_error");
    assert!(why.contains("not found"), "{failed}");
    let events = |d: &Daemon| -> Vec<Value> {
        let (st, v) = d.call(
            "GET",
            "/v1/events?type=snapshot_schedule.failed&limit=1000",
            &d.admin(),
            None,
        );
        assert_eq!(st, 200, "{v}");
        v["items"].as_array().unwrap().clone()
    };
    let e = wait(5, "the failure's event", || events(&d).first().cloned());
    assert_eq!(
        (&e["object"], &e["name"], &e["tenant"], &e["severity"]),
        (&sx["id"], &json!("sx"), &json!("ml"), &json!("warning")),
        "{e}"
    );
    assert!(s(&e, "message").contains(&why), "{e}");
    // Failing again for the same reason is no new event; the other schedule runs on.
    let sy_before = show(&c, "sy", "ml")["taken"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(events(&d).len(), 1, "{:?}", events(&d));
    let sy = show(&c, "sy", "ml");
    assert!(sy["taken"].as_u64().unwrap() > sy_before, "{sy}");
    assert_eq!(sy["last_error"], Value::Null, "{sy}");
    // A tenant sees its schedule's event in `strata events`.
    let out = c.ok(&["events", "--type", "snapshot_schedule", "--tenant", "ml"]);
    assert!(out.contains("snapshot_schedule.failed"), "{out}");
}

#[test]
fn bad_input_answers_stable_codes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let c = Cli { d: &d, data: &data };
    let admin = d.admin();
    c.ok(&["tenant", "create", "a"]);
    c.ok(&["tenant", "create", "b"]);
    c.ok(&["tenant", "set-quota", "b", "--max-schedules", "1"]);
    let va = s(
        &c.json(&["volume", "create", "va", "--size", "8M", "--tenant", "a"]),
        "id",
    );
    let vb = s(
        &c.json(&["volume", "create", "vb", "--size", "8M", "--tenant", "b"]),
        "id",
    );
    let (st, tok) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "a", "role": "member"})),
    );
    assert_eq!(st, 201, "{tok}");
    let ta = s(&tok, "token");
    let make =
        |token: &str, body: Value| d.call("POST", "/v1/snapshot-schedules", token, Some(body));
    let body = |vols: &[&str], interval: Value, keep: Value| json!({"name": "s", "volumes": vols, "interval": interval, "keep": keep});
    for (b, status, code, field) in [
        (
            body(&[&va], json!("0s"), json!(1)),
            400,
            "invalid_argument",
            "interval",
        ),
        (
            body(&[&va], json!("0"), json!(1)),
            400,
            "invalid_argument",
            "interval",
        ),
        (
            body(&[&va], json!("1000d"), json!(1)),
            400,
            "invalid_argument",
            "interval",
        ),
        (
            body(&[&va], json!("1h"), json!(0)),
            400,
            "invalid_argument",
            "keep",
        ),
        (
            body(&[], json!("1h"), json!(1)),
            400,
            "invalid_argument",
            "volumes",
        ),
        (
            body(&[&va, &va], json!("1h"), json!(1)),
            400,
            "invalid_argument",
            "volumes",
        ),
        (
            body(&["nosuchvolume"], json!("1h"), json!(1)),
            409,
            "reference_not_found",
            "volumes",
        ),
        // Another tenant's volume answers exactly as one that does not exist.
        (
            body(&[&vb], json!("1h"), json!(1)),
            409,
            "reference_not_found",
            "volumes",
        ),
    ] {
        let (st, v) = make(&ta, b.clone());
        assert_eq!(
            (
                st,
                v["error"]["code"].as_str(),
                v["error"]["field"].as_str()
            ),
            (status, Some(code), Some(field)),
            "{b}: {v}"
        );
    }
    let (st, v) = make(&ta, json!({"name": "s", "volumes": [va], "interval": "1h"}));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    // Nothing was made.
    let (_, l) = d.call("GET", "/v1/snapshot-schedules", &admin, None);
    assert_eq!(l["items"], json!([]), "{l}");
    let (_, t) = d.call("GET", "/v1/tenants/a", &admin, None);
    assert_eq!(t["usage"]["snapshot_schedules"], 0, "{t}");
    let (ok, out) = c.run(&[
        "snapshot", "schedule", "create", "bad", "--volume", "va", "--every", "0s", "--keep", "1",
        "--tenant", "a",
    ]);
    assert!(!ok && out.contains("invalid_argument"), "{out}");

    // One made; its name is then taken.
    let (st, mine) = make(&ta, body(&[&va], json!("1h"), json!(24)));
    assert_eq!(st, 201, "{mine}");
    let (st, v) = make(&ta, body(&[&va], json!("2h"), json!(2)));
    assert_eq!(
        (
            st,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (409, Some("snapshot_schedule_exists"), Some("name")),
        "{v}"
    );
    let path = format!("/v1/snapshot-schedules/{}", s(&mine, "id"));
    // A bad change changes nothing; a null is not "remove" here (nothing is nullable).
    for (b, code) in [
        (json!({"keep": 0}), "invalid_argument"),
        (json!({"interval": "0s", "keep": 5}), "invalid_argument"),
        (json!({"paused": null}), "invalid_body"),
        (json!({"every": "1h"}), "invalid_body"),
    ] {
        let (st, v) = d.call("PATCH", &path, &ta, Some(b.clone()));
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{b}: {v}"
        );
    }
    let (_, now_mine) = d.call("GET", &path, &ta, None);
    assert_eq!(
        (
            &now_mine["keep"],
            &now_mine["interval"],
            &now_mine["next_run"]
        ),
        (&json!(24), &json!("1h"), &mine["next_run"]),
        "{now_mine}"
    );
    // A good change changes only what it names.
    let (st, v) = d.call("PATCH", &path, &ta, Some(json!({"keep": 5})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["keep"], &v["interval"], &v["paused"]),
        (&json!(5), &json!("1h"), &json!(false))
    );

    // Another tenant's schedule is not found, whatever is asked, and stays as it is.
    let (st, theirs) = make(
        &admin,
        json!({"name": "t", "volumes": [vb], "interval": "1d", "keep": 7}),
    );
    assert_eq!(st, 201, "{theirs}");
    let theirs_path = format!("/v1/snapshot-schedules/{}", s(&theirs, "id"));
    for (m, b) in [
        ("GET", None),
        ("PATCH", Some(json!({"paused": true}))),
        ("DELETE", None),
    ] {
        let (st, v) = d.call(m, &theirs_path, &ta, b);
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (404, Some("snapshot_schedule_not_found")),
            "{m}: {v}"
        );
    }
    let (_, still) = d.call("GET", &theirs_path, &admin, None);
    assert_eq!(
        (&still["paused"], &still["keep"]),
        (&json!(false), &json!(7)),
        "{still}"
    );
    let (_, l) = d.call("GET", "/v1/snapshot-schedules", &ta, None);
    assert_eq!(
        l["items"].as_array().unwrap().len(),
        1,
        "a sees only its own: {l}"
    );
    // The count quota: b may have one.
    let (st, v) = make(
        &admin,
        json!({"name": "t2", "volumes": [vb], "interval": "1d", "keep": 7}),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("quota_exceeded")),
        "{v}"
    );
    let (_, t) = d.call("GET", "/v1/tenants/b", &admin, None);
    assert_eq!(t["usage"]["snapshot_schedules"], 1, "{t}");
}
