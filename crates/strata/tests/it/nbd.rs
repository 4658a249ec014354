//! Attachments opened by real NBD clients (qemu, libnbd), over the Unix socket and TLS.

use crate::common::*;
use serde_json::json;

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

/// Snapshots by name where ids work (issue 11, issue 16 point 6): `strata volume attach
/// VOL@SNAP` exports the snapshot read-only under a URI qemu opens, and
/// `strata:changed-since:NAME` answers BLOCK_STATUS as `strata:changed-since:ID` does.
#[test]
fn snapshots_by_name_attach_read_only_and_answer_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let cli = |args: &[&str]| -> std::process::Output {
        strata()
            .args(args)
            .args(["--endpoint", &d.url, "--token", &admin])
            .output()
            .unwrap()
    };
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    ok(&cli(&["tenant", "create", "ml"]));
    ok(&cli(&[
        "volume", "create", "ckpt", "--size", "16M", "--tenant", "ml",
    ]));
    let uri = ok(&cli(&["volume", "attach", "ckpt", "--tenant", "ml"]));
    let qemu_io = |uri: &str, cmds: &[&str]| -> std::process::Output {
        let mut c = std::process::Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.arg(uri)
            .output()
            .expect("qemu-io (qemu-utils) is installed")
    };
    let o = qemu_io(&uri, &["write -P 0x11 0 2M", "flush"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(&cli(&[
        "snapshot", "create", "ckpt", "before", "--tenant", "ml",
    ]));
    let o = qemu_io(&uri, &["write -P 0x22 1M 64k", "flush"]);
    assert!(o.status.success());

    // The snapshot by name: read-only, with the content from before the second write.
    let snap_uri = ok(&cli(&["volume", "attach", "ckpt@before", "--tenant", "ml"]));
    assert!(snap_uri.contains("@before"), "{snap_uri}");
    let o = std::process::Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read -P 0x11 0 2M", &snap_uri])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !out.contains("Pattern verification failed"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The server flags the export read-only (its refusal of writes, EPERM, is tested in
    // strata-nbd's `snapshot_export_is_read_only`).
    let o = std::process::Command::new("nbdinfo")
        .args(["--json", &snap_uri])
        .output()
        .expect("nbdinfo (libnbd-bin) is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    // An unknown snapshot name is refused by the CLI with its code.
    let o = cli(&["volume", "attach", "ckpt@nosuch", "--tenant", "ml"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshot_not_found"));

    // changed-since by name: exactly the 64 KiB written after the snapshot is flagged.
    let changed = |ctx: &str| -> String {
        let o = std::process::Command::new("nbdinfo")
            .arg(format!("--map={ctx}"))
            .arg(&uri)
            .output()
            .expect("nbdinfo (libnbd-bin) is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let by_name = changed("strata:changed-since:before");
    let flagged: Vec<&str> = by_name
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("1"))
        .collect();
    assert_eq!(flagged.len(), 1, "{by_name}");
    let f: Vec<&str> = flagged[0].split_whitespace().collect();
    assert_eq!((f[0], f[1]), ("1048576", "65536"), "{by_name}");
    let (_, snaps) = d.call(
        "GET",
        &format!("/v1/volumes/{}/snapshots", uri_export(&uri)),
        &admin,
        None,
    );
    let sid = snaps["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(changed(&format!("strata:changed-since:{sid}")), by_name);
}

/// The export name in an `nbd+unix:///EXPORT?socket=...` URI.
fn uri_export(uri: &str) -> String {
    let rest = uri.trim_start_matches("nbd+unix:///");
    rest.split('?').next().unwrap().to_string()
}
