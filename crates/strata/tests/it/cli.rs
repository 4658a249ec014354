//! The CLI against a live daemon.

use crate::common::*;
use serde_json::{json, Value};

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
    // The import attached only for its copy: the volume is detached again.
    let (s, a) = d.call(
        "GET",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        None,
    );
    assert_eq!(
        (s, a["error"]["code"].as_str()),
        (404, Some("attachment_not_found"))
    );
    let (_, a) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        Some(json!({})),
    );
    let uri = a["uri"].as_str().unwrap();
    // `volume attachments` lists it, by name, with its URI.
    let o = strata()
        .args(["volume", "attachments", "--endpoint", &d.url, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && listed
                .lines()
                .any(|l| l.starts_with("ds ") && l.contains(uri)),
        "{listed}{}",
        String::from_utf8_lossy(&o.stderr)
    );
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
