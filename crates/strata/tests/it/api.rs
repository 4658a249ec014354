//! The REST API end to end: error bodies, quotas and audit, the one authorization matrix through
//! the binary, and the OpenAPI document against the live server.

use crate::common::*;
use serde_json::{json, Value};

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
        (409, Some("quota_exceeded"))
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
        (409, Some("quota_exceeded")),
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
    assert_eq!(s, 409, "snapshot quota");
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(
        t["usage"],
        json!({"capacity_bytes": 2u64 << 30, "volumes": 2, "snapshots": 1, "iops": 0, "gpus": 0, "networks": 0, "ports": 0, "snapshot_schedules": 0})
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
        json!({"capacity_bytes": 1u64 << 30, "volumes": 1, "snapshots": 0, "iops": 0, "gpus": 0, "networks": 0, "ports": 0, "snapshot_schedules": 0})
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
    // Many 1G fixtures on the 8G test pool: no overcommit limit (tested in qos.rs).
    let lift = json!({"overcommit": null});
    d.call("PUT", "/v1/pools/default/settings", &admin, Some(lift));
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
        serde_json::from_str(include_str!("../../../strata-control/openapi.json")).unwrap();
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
