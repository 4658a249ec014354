//! The binary as a user runs it: `strata serve` (create, SIGTERM, restart, kill -9, data-dir
//! lock), the REST API (errors, idempotency, quotas, the authorization matrix, the OpenAPI
//! document against the live server) and the CLI end to end.

mod common;

use common::*;
use serde_json::{json, Value};

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
fn api_errors_are_json_with_stable_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let (s, v) = d.call("GET", "/v1/volumes", "", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!("not an object")));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (s, v) = d.call(
        "POST",
        "/v1/tenants",
        &admin,
        Some(json!({"name": "bad/name"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (400, Some("invalid_argument"), Some("name"))
    );
    assert_eq!(
        d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "acme"})))
            .0,
        201
    );
    let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "acme"})));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("tenant_exists"))
    );
    for (body, field) in [
        (json!({"name": "v", "size": 0, "tenant": "acme"}), "size"),
        (
            json!({"name": "v", "size": "12Q", "tenant": "acme"}),
            "size",
        ),
        (json!({"name": "v", "size": 4097, "tenant": "acme"}), "size"),
        (
            json!({"name": "v", "size": "10G", "tenant": "acme", "class": "floppy"}),
            "class",
        ),
        (
            json!({"name": "-v", "size": "10G", "tenant": "acme"}),
            "name",
        ),
    ] {
        let (s, v) = d.call("POST", "/v1/volumes", &admin, Some(body));
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["field"].as_str(), Some(field), "{v}");
    }
    let (_, v) = d.call("GET", "/v1/volumes?tenant=acme", &admin, None);
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        0,
        "bad input created something"
    );
    let (s, v) = d.call("GET", "/v1/volumes/nope", &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("volume_not_found"))
    );
    let (s, _) = d.call("GET", "/v1/nothing-here", &admin, None);
    assert_eq!(s, 404);
    d.stop();
}

#[test]
fn creates_are_idempotent_and_quotas_hold() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "acme", "quota": {"capacity_bytes": 3u64 << 30, "volumes": 2, "snapshots": 1}})));
    let body = json!({"name": "a", "size": "1G", "tenant": "acme", "request_id": "r-1"});
    let (s1, v1) = d.call("POST", "/v1/volumes", &admin, Some(body.clone()));
    let (s2, v2) = d.call("POST", "/v1/volumes", &admin, Some(body));
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1["id"], v2["id"], "same request id, same volume");
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "a", "size": "1G", "tenant": "acme"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_exists"))
    );
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "b", "size": "3G", "tenant": "acme"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("quota_exceeded"))
    );
    assert_eq!(
        d.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": "b", "size": "1G", "tenant": "acme"}))
        )
        .0,
        201
    );
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "c", "size": "1G", "tenant": "acme"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("quota_exceeded")),
        "volume count quota"
    );
    let id = v1["id"].as_str().unwrap();
    assert_eq!(
        d.call(
            "POST",
            &format!("/v1/volumes/{id}/snapshots"),
            &admin,
            Some(json!({"name": "s1"}))
        )
        .0,
        201
    );
    let (s, _) = d.call(
        "POST",
        &format!("/v1/volumes/{id}/snapshots"),
        &admin,
        Some(json!({"name": "s2"})),
    );
    assert_eq!(s, 422, "snapshot quota");
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(
        t["usage"],
        json!({"capacity_bytes": 2u64 << 30, "volumes": 2, "snapshots": 1, "iops": 0})
    );
    // Delete with snapshots is refused unless forced; usage is returned.
    let (s, v) = d.call("DELETE", &format!("/v1/volumes/{id}"), &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_has_snapshots"))
    );
    assert_eq!(
        d.call(
            "DELETE",
            &format!("/v1/volumes/{id}?force=true"),
            &admin,
            None
        )
        .0,
        204
    );
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(
        t["usage"],
        json!({"capacity_bytes": 1u64 << 30, "volumes": 1, "snapshots": 0, "iops": 0})
    );
    let (_, audit) = d.call("GET", "/v1/audit", &admin, None);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"volume.create") && actions.contains(&"volume.delete"),
        "{actions:?}"
    );
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["outcome"] == "quota_exceeded"));
    d.stop();
}

/// Every endpoint with every role, and with another tenant's token: the status each must get.
#[test]
fn authorization_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    for t in ["acme", "other"] {
        d.call("POST", "/v1/tenants", &admin, Some(json!({"name": t})));
    }
    let tok = |tenant: &str, role: &str| -> String {
        let (s, v) = d.call(
            "POST",
            "/v1/tokens",
            &admin,
            Some(json!({"tenant": tenant, "role": role})),
        );
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let roles = [
        ("admin", admin.clone()),
        ("tenant-admin", tok("acme", "tenant-admin")),
        ("member", tok("acme", "member")),
        ("reader", tok("acme", "reader")),
        ("other", tok("other", "tenant-admin")),
        ("none", String::new()),
    ];
    // Fresh fixtures per row, created by the admin in tenant acme.
    let fixture = |n: &str| -> (String, String) {
        let (_, v) = d.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": n, "size": "1G", "tenant": "acme"})),
        );
        let vid = v["id"].as_str().unwrap().to_string();
        let (_, s) = d.call(
            "POST",
            &format!("/v1/volumes/{vid}/snapshots"),
            &admin,
            Some(json!({"name": "s"})),
        );
        (vid, s["id"].as_str().unwrap().to_string())
    };
    //           endpoint                               admin tadm member reader other none
    type Row = (&'static str, &'static str, [u16; 6]);
    let rows: &[Row] = &[
        ("GET", "/v1/pools", [200, 403, 403, 403, 403, 401]),
        ("GET", "/v1/tenants", [200, 200, 200, 200, 200, 401]),
        ("GET", "/v1/tenants/acme", [200, 200, 200, 200, 404, 401]),
        ("POST", "/v1/tenants", [201, 403, 403, 403, 403, 401]),
        (
            "PUT",
            "/v1/tenants/acme/quota",
            [200, 403, 403, 403, 403, 401],
        ),
        ("POST", "/v1/tokens", [201, 201, 403, 403, 404, 401]),
        ("GET", "/v1/volumes/{v}", [200, 200, 200, 200, 404, 401]),
        (
            "GET",
            "/v1/volumes/{v}/snapshots",
            [200, 200, 200, 200, 404, 401],
        ),
        ("GET", "/v1/snapshots/{s}", [200, 200, 200, 200, 404, 401]),
        ("POST", "/v1/volumes", [201, 201, 201, 403, 404, 401]),
        ("PATCH", "/v1/volumes/{v}", [200, 200, 200, 403, 404, 401]),
        (
            "POST",
            "/v1/volumes/{v}/snapshots",
            [201, 201, 201, 403, 404, 401],
        ),
        (
            "POST",
            "/v1/snapshots/{s}/clone",
            [201, 201, 201, 403, 404, 401],
        ),
        (
            "POST",
            "/v1/volumes/{v}/rollback",
            [200, 200, 200, 403, 404, 401],
        ),
        (
            "DELETE",
            "/v1/snapshots/{s}",
            [204, 204, 204, 403, 404, 401],
        ),
        (
            "DELETE",
            "/v1/volumes/{v}?force=true",
            [204, 204, 204, 403, 404, 401],
        ),
        ("GET", "/v1/audit", [200, 403, 403, 403, 403, 401]),
        ("PUT", "/v1/volumes/{v}/qos", [200, 200, 200, 403, 404, 401]),
        (
            "GET",
            "/v1/volumes/{v}/stats",
            [200, 200, 200, 200, 404, 401],
        ),
        (
            "POST",
            "/v1/volumes/{v}/attachments",
            [201, 201, 201, 403, 404, 401],
        ),
        (
            "GET",
            "/v1/volumes/{v}/attachments",
            [404, 404, 404, 404, 404, 401],
        ),
        (
            "DELETE",
            "/v1/volumes/{v}/attachments",
            [404, 404, 404, 403, 404, 401],
        ),
        ("GET", "/metrics", [200, 403, 403, 403, 403, 401]),
        ("GET", "/v1/switches", [200, 403, 403, 403, 403, 401]),
        ("POST", "/v1/switches", [201, 403, 403, 403, 403, 401]),
        ("DELETE", "/v1/tenants/{t}", [204, 403, 403, 403, 403, 401]),
    ];
    let mut n = 0;
    for (method, path, want) in rows {
        for (i, (role, token)) in roles.iter().enumerate() {
            n += 1;
            let (vid, sid) = fixture(&format!("f{n}"));
            let t = format!("empty{n}");
            d.call("POST", "/v1/tenants", &admin, Some(json!({"name": t})));
            let path = path
                .replace("{v}", &vid)
                .replace("{s}", &sid)
                .replace("{t}", &t);
            let body = match (*method, path.as_str()) {
                ("POST", "/v1/tenants") => json!({"name": format!("t{n}")}),
                ("PUT", p) if p.ends_with("/qos") => json!({"iops_limit": 1000}),
                ("PUT", _) => json!({"volumes": 100_000}),
                ("POST", "/v1/switches") => json!({"name": format!("sw{n}")}),
                ("POST", "/v1/tokens") => json!({"tenant": "acme", "role": "reader"}),
                ("POST", "/v1/volumes") => {
                    json!({"name": format!("new{n}"), "size": "1G", "tenant": "acme"})
                }
                ("PATCH", _) => json!({"size": "2G"}),
                ("POST", p) if p.ends_with("/snapshots") => json!({"name": "s2"}),
                ("POST", p) if p.ends_with("/clone") => json!({"name": format!("c{n}")}),
                ("POST", p) if p.ends_with("/rollback") => json!({"snapshot": sid}),
                _ => Value::Null,
            };
            let body = (*method != "GET" && *method != "DELETE").then_some(body);
            let (s, v) = d.call(method, &path, token, body);
            assert_eq!(s, want[i], "{method} {path} as {role}: {v}");
        }
    }
    d.stop();
}

#[test]
fn openapi_document_matches_the_live_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let (s, served) = d.call("GET", "/v1/openapi.json", "", None);
    assert_eq!(s, 200);
    let checked_in: Value =
        serde_json::from_str(include_str!("../../strata-control/openapi.json")).unwrap();
    assert_eq!(served, checked_in);
    // Every documented operation exists: it answers something other than the router's
    // "no such endpoint" fallback.
    let admin = d.admin();
    let mut ops = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let p = path
                .replace("{id}", "x")
                .replace("{name}", "x")
                .replace("{port}", "x");
            let body = (method != "get" && method != "delete").then(|| json!({}));
            let (_, v) = d.call(&method.to_uppercase(), &p, &admin, body);
            assert_ne!(
                v["error"]["message"], "no such endpoint not found",
                "{method} {path} is documented but not served"
            );
            ops += 1;
        }
    }
    assert!(ops >= 18);
    d.stop();
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

#[test]
fn cli_end_to_end_with_a_member_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = |args: &[&str], token: Option<&str>| -> (bool, String, String) {
        let mut c = strata();
        c.args(args)
            .arg("--endpoint")
            .arg(&d.url)
            .arg("--data-dir")
            .arg(&data);
        if let Some(t) = token {
            c.env("STRATA_TOKEN", t);
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // The admin token is read from the data dir when none is given.
    assert!(cli(&["tenant", "create", "research", "--capacity", "1T"], None).0);
    let (ok, out, err) = cli(
        &[
            "token", "create", "--tenant", "research", "--role", "member", "-o", "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let member = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let m = Some(member.as_str());
    assert!(cli(&["volume", "create", "ds", "--size", "10G"], m).0);
    let (ok, out, _) = cli(&["volume", "list", "-o", "json"], m);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["name"], "ds");
    assert_eq!(v["items"][0]["size"], 10u64 << 30);
    let (ok, out, _) = cli(&["volume", "list"], m);
    assert!(
        ok && out.starts_with("NAME") && out.contains("10.0G"),
        "{out}"
    );
    let (ok, out, _) = cli(&["volume", "show", "ds", "-o", "yaml"], m);
    assert!(ok && out.contains("name: ds"), "{out}");
    assert!(cli(&["snapshot", "create", "ds", "s1"], m).0);
    assert!(cli(&["volume", "clone", "ds@s1", "ds2"], m).0);
    assert!(cli(&["volume", "rollback", "ds", "s1"], m).0);
    assert!(cli(&["volume", "resize", "ds", "--size", "20G"], m).0);
    // Errors: the server's code and message, non-zero exit.
    let (ok, _, err) = cli(&["volume", "delete", "ds"], m);
    assert!(!ok && err.contains("volume_has_snapshots"), "{err}");
    let (ok, _, err) = cli(&["volume", "create", "x", "--size", "10Q"], m);
    assert!(!ok && err.contains("invalid_argument"), "{err}");
    let (ok, _, err) = cli(&["tenant", "create", "nope"], m);
    assert!(!ok && err.contains("forbidden"), "{err}");
    assert!(cli(&["volume", "delete", "ds", "--force"], m).0);
    let (ok, out, _) = cli(&["completion", "bash"], None);
    assert!(ok && out.contains("strata"));
    d.stop();
}

#[test]
fn qos_stats_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    d.call(
        "POST",
        "/v1/tenants",
        &admin,
        Some(json!({"name": "acme", "quota": {"iops": 1000}})),
    );
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "v", "size": "1G", "tenant": "acme"})),
    );
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("iops_limit")),
        "{v}"
    );
    let (s, v) = d.call("POST", "/v1/volumes", &admin, Some(json!({"name": "v", "size": "1G", "tenant": "acme", "iops_limit": 800, "bandwidth_limit": "200M"})));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["qos"]["bandwidth_limit"], 200u64 << 20);
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "w", "size": "1G", "tenant": "acme", "iops_limit": 300})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("quota_exceeded"))
    );
    let (s, v) = d.call(
        "PUT",
        &format!("/v1/volumes/{id}/qos"),
        &admin,
        Some(json!({"iops_limit": 500})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["qos"]["iops_limit"], 500);
    assert_eq!(v["qos"]["bandwidth_limit"], Value::Null);
    let (s, v) = d.call(
        "PUT",
        &format!("/v1/volumes/{id}/qos"),
        &admin,
        Some(json!({"iops_limit": 0})),
    );
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("iops_limit")));
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(t["usage"]["iops"], 500);
    let (s, st) = d.call("GET", &format!("/v1/volumes/{id}/stats"), &admin, None);
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["qos"]["iops_limit"], 500);
    assert!(st.get("latency_p99_us").is_some());
    // Metrics: admin only, Prometheus text that promtool accepts.
    let (s, _) = d.call("GET", "/metrics", "", None);
    assert_eq!(s, 401);
    let url = format!("{}/metrics", d.url);
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {admin}"), &url])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("strata_pool_capacity_bytes{pool=\"default\"}"),
        "{text}"
    );
    assert!(
        text.contains(&format!("strata_volume_ops_total{{volume=\"{id}\"")),
        "{text}"
    );
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let res = check.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    // QoS survives a restart.
    d.stop();
    let d = Daemon::start(&dir.path().join("d"));
    let (_, st) = d.call("GET", &format!("/v1/volumes/{id}/stats"), &admin, None);
    assert_eq!(st["qos"]["iops_limit"], 500);
    d.stop();
}

/// The switch through the daemon and the CLI, with real packets: two namespaces on VNI 100
/// ping each other, a third on VNI 200 reaches neither and its frames are dropped; flows,
/// counters, trace, and the switch coming back after a restart.
#[test]
fn switch_through_the_cli_with_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let tag = format!("{}", std::process::id() % 100_000);
    let cli = |args: &[&str]| -> String {
        let o = strata()
            .args(args)
            .arg("--endpoint")
            .arg(&d.url)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let ns: Vec<Netns> = (1..=3)
        .map(|i| Netns::new(&format!("sc{tag}n{i}")))
        .collect();
    let taps: Vec<String> = (1..=3).map(|i| format!("sc{tag}t{i}")).collect();
    cli(&["switch", "create", "br0"]);
    cli(&["switch", "add-port", "br0", &taps[0], "--vni", "100"]);
    cli(&["switch", "add-port", "br0", &taps[1], "--vni", "100"]);
    cli(&["switch", "add-port", "br0", &taps[2], "--vni", "200"]);
    for (i, (n, t)) in ns.iter().zip(&taps).enumerate() {
        n.adopt(t, &format!("10.77.0.{}/24", i + 1));
    }
    assert!(ns[0].ping("10.77.0.2"), "same VNI must reach");
    assert!(ns[1].ping("10.77.0.1"));
    assert!(!ns[2].ping("10.77.0.1"), "another VNI must not reach");
    assert!(!ns[0].ping("10.77.0.3"));
    let ports: Value =
        serde_json::from_str(&cli(&["switch", "ports", "br0", "-o", "json"])).unwrap();
    let port = |n: &str| {
        ports["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert!(port(&taps[0])["tx_packets"].as_u64().unwrap() >= 3);
    assert!(
        port(&taps[2])["rx_dropped"].as_u64().unwrap() >= 1,
        "{ports}"
    );
    assert_eq!(
        port(&taps[2])["tx_packets"],
        0,
        "nothing may reach the other tenant: {ports}"
    );
    let flows = cli(&["switch", "dump-flows", "br0"]);
    assert!(
        flows.contains("actions=normal") && flows.contains("n_packets="),
        "{flows}"
    );
    // A flow that drops ICMP between the two: ping stops; deleting it restores it.
    cli(&[
        "switch",
        "add-flow",
        "br0",
        "priority=40000,icmp,actions=drop",
    ]);
    assert!(!ns[0].ping("10.77.0.2"));
    let trace = cli(&[
        "switch",
        "trace",
        "br0",
        &format!("in_port={},icmp,nw_src=10.77.0.1,nw_dst=10.77.0.2", taps[0]),
    ]);
    assert!(trace.contains("drop"), "{trace}");
    // Restart: the switch, its ports and flows come back (the TAPs are reopened).
    d.stop();
    let d2 = Daemon::start(&data);
    let o = strata()
        .args([
            "switch",
            "dump-flows",
            "br0",
            "--endpoint",
            &d2.url,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let flows = String::from_utf8_lossy(&o.stdout);
    assert!(
        flows.contains("priority=40000") && flows.contains("icmp"),
        "{flows}"
    );
    d2.stop();
}

/// A network namespace the test owns, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .status();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (needs root and iproute2)");
        Netns(name.to_string())
    }
    fn sh(&self, args: &[&str]) {
        let mut v = vec!["netns", "exec", &self.0];
        v.extend_from_slice(args);
        let st = std::process::Command::new("ip").args(&v).status().unwrap();
        assert!(st.success(), "ip {v:?}");
    }
    /// Moves `dev` (in the root namespace, where the daemon opened it) in here with `addr`.
    fn adopt(&self, dev: &str, addr: &str) {
        let st = std::process::Command::new("ip")
            .args(["link", "set", dev, "netns", &self.0])
            .status()
            .unwrap();
        assert!(st.success());
        self.sh(&["ip", "addr", "add", addr, "dev", dev]);
        self.sh(&["ip", "link", "set", dev, "up"]);
        self.sh(&["ip", "link", "set", "lo", "up"]);
    }
    fn ping(&self, dst: &str) -> bool {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.0, "ping", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Issue 4's end-to-end path: a tenant's member creates a volume, attaches it, writes with
/// qemu-io through the URI the API returned, snapshots, clones, and qemu-img compares the
/// clone with the snapshot. Volumes that are not attached are not exported.
#[test]
fn attach_write_snapshot_clone_compare_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "ml"})));
    let (_, t) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "ml", "role": "member"})),
    );
    let m = t["token"].as_str().unwrap().to_string();
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &m,
        Some(json!({"name": "ckpt", "size": "64M"})),
    );
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    let (s, a) = d.call("POST", &format!("/v1/volumes/{vid}/attachments"), &m, None);
    assert_eq!(s, 201, "{a}");
    let uri = a["uri"].as_str().unwrap().to_string();
    assert!(uri.starts_with("nbd+unix:///"), "{uri}");
    let qemu_io = |uri: &str, cmds: &[&str]| -> std::process::Output {
        let mut c = std::process::Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.arg(uri)
            .output()
            .expect("qemu-io (Debian package qemu-utils) is installed")
    };
    let o = qemu_io(
        &uri,
        &["write -P 0xab 0 1M", "write -P 0xcd 5000 70000", "flush"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (s, snap) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/snapshots"),
        &m,
        Some(json!({"name": "s1"})),
    );
    assert_eq!(s, 201, "{snap}");
    let sid = snap["id"].as_str().unwrap();
    // Changes after the snapshot must not show in the snapshot or the clone.
    let o = qemu_io(&uri, &["write -P 0xee 0 4096"]);
    assert!(o.status.success());
    let (s, c) = d.call(
        "POST",
        &format!("/v1/snapshots/{sid}/clone"),
        &m,
        Some(json!({"name": "branch"})),
    );
    assert_eq!(s, 201, "{c}");
    let cid = c["id"].as_str().unwrap().to_string();
    // Not attached yet: not exported.
    let socket = uri.split("socket=").nth(1).unwrap().to_string();
    let clone_uri = format!("nbd+unix:///{cid}?socket={socket}");
    let o = std::process::Command::new("qemu-img")
        .args(["info", &clone_uri])
        .output()
        .unwrap();
    assert!(!o.status.success(), "an unattached volume was exported");
    let (s, ca) = d.call("POST", &format!("/v1/volumes/{cid}/attachments"), &m, None);
    assert_eq!(s, 201);
    assert_eq!(ca["uri"], clone_uri.as_str());
    let snap_uri = format!("nbd+unix:///{vid}@{sid}?socket={socket}");
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &clone_uri, &snap_uri])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "clone differs from snapshot: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = qemu_io(
        &clone_uri,
        &["read -P 0xab 0 4096", "read -P 0xcd 5000 70000"],
    );
    assert!(
        o.status.success()
            && !String::from_utf8_lossy(&o.stdout).contains("Pattern verification failed"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The live volume differs from its snapshot where it was written after it.
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &uri, &snap_uri])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Attached volumes are not deleted without force; detach stops new connections.
    let (s, e) = d.call("DELETE", &format!("/v1/volumes/{cid}"), &m, None);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("volume_attached"))
    );
    assert_eq!(
        d.call(
            "DELETE",
            &format!("/v1/volumes/{cid}/attachments"),
            &m,
            None
        )
        .0,
        204
    );
    let o = std::process::Command::new("qemu-img")
        .args(["info", &clone_uri])
        .output()
        .unwrap();
    assert!(!o.status.success());
    // Another tenant's member cannot see the attachment.
    d.call(
        "POST",
        "/v1/tenants",
        &admin,
        Some(json!({"name": "other"})),
    );
    let (_, t2) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "other", "role": "member"})),
    );
    let o2 = t2["token"].as_str().unwrap();
    assert_eq!(
        d.call("GET", &format!("/v1/volumes/{vid}/attachments"), o2, None)
            .0,
        404
    );
    d.stop();
}

/// NBD over TCP: TLS is required, and the client certificate `strata volume attach --tcp`
/// hands out opens only its own tenant's volumes.
#[test]
fn tcp_attachments_need_the_tenants_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start_with(&data, &["--nbd-listen", "127.0.0.1:0"]);
    let admin = d.admin();
    let mut tokens = Vec::new();
    for t in ["acme", "other"] {
        d.call("POST", "/v1/tenants", &admin, Some(json!({"name": t})));
        let (_, tok) = d.call(
            "POST",
            "/v1/tokens",
            &admin,
            Some(json!({"tenant": t, "role": "member"})),
        );
        let tok = tok["token"].as_str().unwrap().to_string();
        let (s, v) = d.call(
            "POST",
            "/v1/volumes",
            &tok,
            Some(json!({"name": "disk", "size": "64M"})),
        );
        assert_eq!(s, 201, "{v}");
        tokens.push(tok);
    }
    // Each tenant attaches its disk over TCP through the CLI and gets its own certificate.
    let mut uris = Vec::new();
    for (t, tok) in ["acme", "other"].iter().zip(&tokens) {
        let creds = dir.path().join(format!("tls-{t}"));
        let o = strata()
            .args(["volume", "attach", "disk", "--tcp", "--credentials-dir"])
            .arg(&creds)
            .args(["--endpoint", &d.url, "--data-dir"])
            .arg(&data)
            .env("STRATA_TOKEN", tok)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let uri = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(uri.starts_with("nbds://127.0.0.1:"), "{uri}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(creds.join("client-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        uris.push((uri, creds));
    }
    let (uri, creds) = &uris[0];
    let rest = uri.strip_prefix("nbds://").unwrap();
    let (hostport, export) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let qemu_io = |creds: &std::path::Path, export: &str, cmds: &[&str]| {
        let mut c = std::process::Command::new("qemu-io");
        c.arg("--object")
            .arg(format!(
                "tls-creds-x509,id=tls0,endpoint=client,dir={}",
                creds.display()
            ))
            .arg("--image-opts")
            .arg(format!(
                "driver=nbd,host={host},port={port},export={export},tls-creds=tls0"
            ));
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.output().expect("qemu-io is installed")
    };
    let o = qemu_io(
        creds,
        export,
        &["write -P 0x5a 0 64k", "read -P 0x5a 0 64k"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !out.contains("verification failed"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The other tenant's certificate does not open acme's disk.
    let o = qemu_io(&uris[1].1, export, &["read 0 4k"]);
    assert!(
        !o.status.success(),
        "another tenant's certificate opened the export"
    );
    // libnbd with the right certificates reads the size; a plain TCP client is refused.
    let o = std::process::Command::new("nbdinfo")
        .arg("--size")
        .arg(format!("{uri}?tls-certificates={}", creds.display()))
        .output()
        .expect("nbdinfo is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        (64u64 << 20).to_string()
    );
    let o = std::process::Command::new("nbdinfo")
        .arg(format!("nbd://{hostport}/{export}"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a plain TCP client was served");
    d.stop();
}

/// `strata volume import`: a local image goes into a volume over NBD; zero stretches stay
/// unallocated; qemu-img compare finds the volume identical to the file.
#[test]
fn import_copies_an_image_and_keeps_zeros_thin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "ml"})));
    let (_, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "ds", "size": "32M", "tenant": "ml"})),
    );
    let vid = v["id"].as_str().unwrap().to_string();
    // 20 MiB + 12 KiB: data, then 8 MiB of zeros, then data again.
    let mut img = vec![0u8; (20 << 20) + 12288];
    let mut x = 0x12345678u32;
    for (i, b) in img.iter_mut().enumerate() {
        if !(6 << 20..14 << 20).contains(&i) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
    let file = dir.path().join("image.raw");
    std::fs::write(&file, &img).unwrap();
    let o = strata()
        .args(["volume", "import", "ds"])
        .arg(&file)
        .args(["--tenant", "ml", "--endpoint", &d.url, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("8.0M of zeros skipped"), "{out}");
    let (_, a) = d.call(
        "GET",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        None,
    );
    let uri = a["uri"].as_str().unwrap();
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&file)
        .arg(uri)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, vv) = d.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    let allocated = vv["allocated"].as_u64().unwrap();
    assert!(allocated < 13 << 20, "zeros were written: {allocated}");
    // A file larger than the volume is refused before anything is written.
    let big = dir.path().join("big.raw");
    std::fs::write(&big, vec![1u8; 33 << 20]).unwrap();
    let o = strata()
        .args(["volume", "import", "ds"])
        .arg(&big)
        .args(["--tenant", "ml", "--endpoint", &d.url, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("resize it first"));
    d.stop();
}

/// QoS through a real client: an IOPS limit holds back qemu-io's writes on an open NBD
/// connection, lifting it frees the same connection at once, and the live figures show both.
#[test]
fn qos_change_reaches_an_open_nbd_connection() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "ml"})));
    let (_, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "q", "size": "16M", "tenant": "ml", "iops_limit": 20})),
    );
    let vid = v["id"].as_str().unwrap().to_string();
    let (_, a) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        None,
    );
    let uri = a["uri"].as_str().unwrap().to_string();
    // 300 writes at 20 IOPS would take 15 s.
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for i in 0..300 {
        args.push("-c".into());
        args.push(format!("write -P 0x11 {} 4k", i * 4096));
    }
    args.push(uri);
    let start = std::time::Instant::now();
    let mut child = std::process::Command::new("qemu-io")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io is installed");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (_, st) = d.call("GET", &format!("/v1/volumes/{vid}/stats"), &admin, None);
    let during = st["totals"]["writes"].as_u64().unwrap();
    assert!(
        during < 100,
        "the limit did not hold: {during} writes in 1.5 s at 20 IOPS"
    );
    assert!(st["totals"]["throttled_us"].as_u64().unwrap() > 0, "{st}");
    let (s, _) = d.call(
        "PUT",
        &format!("/v1/volumes/{vid}/qos"),
        &admin,
        Some(json!({})),
    );
    assert_eq!(s, 200);
    assert!(child.wait().unwrap().success());
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "the change did not reach the open connection: {took:?}"
    );
    let (_, st) = d.call("GET", &format!("/v1/volumes/{vid}/stats"), &admin, None);
    assert!(st["totals"]["writes"].as_u64().unwrap() >= 300, "{st}");
    assert!(st["iops"].as_f64().unwrap() > 0.0);
    d.stop();
}
