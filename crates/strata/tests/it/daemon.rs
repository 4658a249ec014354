//! The daemon: start, clean stop, reopen, and recovery after kill -9.

use crate::common::*;
use serde_json::json;

#[test]
fn serve_creates_pool_stops_cleanly_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("strata-data");
    let d = Daemon::start(&data);
    assert!(data.join("pools/default/dev0.img").exists());
    let tok = data.join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&tok).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second daemon on the same data dir is refused with a clear message.
    let out = strata()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another Strata process"));
    d.stop();

    let out = strata()
        .args(["pool", "show", "--offline", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("(metadata)"), "{text}");
    let id = text.lines().next().unwrap().to_string();
    // Restart: the same pool and the same admin token come back.
    let secret = std::fs::read_to_string(&tok).unwrap();
    Daemon::start(&data).stop();
    assert_eq!(std::fs::read_to_string(&tok).unwrap(), secret);
    let out = strata()
        .args(["pool", "show", "--offline", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap(),
        id
    );
}

#[test]
fn restart_after_kill_9_recovers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let admin = d.admin();
    d.call(
        "POST",
        "/v1/tenants",
        &admin,
        Some(json!({"name": "acme", "quota": {"volumes": 10}})),
    );
    let (_, member) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "acme", "role": "member"})),
    );
    let member = member["token"].as_str().unwrap().to_string();
    let (_, v) = d.call(
        "POST",
        "/v1/volumes",
        &member,
        Some(json!({"name": "data", "size": "2G"})),
    );
    let vid = v["id"].as_str().unwrap().to_string();
    let (_, s) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/snapshots"),
        &member,
        Some(json!({"name": "ckpt"})),
    );
    let (_, c) = d.call(
        "POST",
        &format!("/v1/snapshots/{}/clone", s["id"].as_str().unwrap()),
        &member,
        Some(json!({"name": "copy"})),
    );
    let (st, att) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &member,
        None,
    );
    assert_eq!(st, 201, "{att}");
    d.kill9();
    let d = Daemon::start(&data);
    // Same token, same tenant, volumes, snapshot, clone and quota.
    let (st, list) = d.call("GET", "/v1/volumes", &member, None);
    assert_eq!(st, 200);
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["copy", "data"]);
    let (_, snaps) = d.call(
        "GET",
        &format!("/v1/volumes/{vid}/snapshots"),
        &member,
        None,
    );
    assert_eq!(snaps["items"][0]["name"], "ckpt");
    let (_, cv) = d.call(
        "GET",
        &format!("/v1/volumes/{}", c["id"].as_str().unwrap()),
        &member,
        None,
    );
    assert_eq!(cv["state"], "available");
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(t["quota"]["volumes"], 10);
    assert_eq!(t["usage"]["volumes"], 2);
    // The attachment is back, and its URI opens.
    let (st, att2) = d.call(
        "GET",
        &format!("/v1/volumes/{vid}/attachments"),
        &member,
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(att2["uri"], att["uri"]);
    let o = std::process::Command::new("qemu-img")
        .args(["info", att2["uri"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.stop();
}
