//! Credentials through the binary: token expiry, listing and revocation from the CLI; a
//! tenant's own NBD socket; detach and certificate revocation ending live NBD sessions.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{strata, Daemon};

/// Runs the CLI against `d` with `token`; (success, stdout, stderr).
fn cli(d: &Daemon, token: &str, args: &[&str]) -> (bool, String, String) {
    let o = strata()
        .args(args)
        .args(["--endpoint", &d.url, "--data-dir"])
        .arg(&d.data)
        .env("STRATA_TOKEN", token)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// A tenant with a tenant-admin token and one 64 MiB volume `disk`; (token, volume id).
fn tenant(d: &Daemon, t: &str) -> (String, String) {
    let admin = d.admin();
    let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!({"name": t})));
    assert_eq!(s, 201, "{v}");
    let (_, tok) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": t, "role": "tenant-admin"})),
    );
    let tok = tok["token"].as_str().unwrap().to_string();
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &tok,
        Some(json!({"name": "disk", "size": "64M"})),
    );
    assert_eq!(s, 201, "{v}");
    (tok, v["id"].as_str().unwrap().to_string())
}

#[test]
fn tokens_from_the_cli_expire_list_without_secrets_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let (ta, _) = tenant(&d, "acme");
    let (ok, out, err) = cli(
        &d,
        &ta,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "member",
            "--expires",
            "30d",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let secret = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let exp = made["expires"].as_u64().unwrap();
    let now = made["created"].as_u64().unwrap();
    assert_eq!(exp - now, 30 * 86_400);
    // never: admins only.
    let (ok, _, err) = cli(
        &d,
        &ta,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "member",
            "--expires",
            "never",
        ],
    );
    assert!(!ok && err.contains("never expire"), "{err}");
    // The new token works once, then shows up in the tenant admin's list with its last use.
    let (s, _) = d.call("GET", "/v1/volumes", &secret, None);
    assert_eq!(s, 200);
    let (ok, out, err) = cli(&d, &ta, &["token", "list", "-o", "json"]);
    assert!(ok, "{err}");
    assert!(!out.contains(&secret), "a secret was listed");
    let items: Value = serde_json::from_str(&out).unwrap();
    let items = items["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let mine = items.iter().find(|t| t["id"] == json!(id)).unwrap();
    assert!(mine["last_used"].as_u64().is_some(), "{mine}");
    assert_eq!(mine["expires"].as_u64(), Some(exp));
    // The table has the documented columns.
    let (ok, out, _) = cli(&d, &ta, &["token", "list"]);
    assert!(
        ok && out.contains("EXPIRES") && out.contains("LAST USED"),
        "{out}"
    );
    // Revoked: 401 unauthenticated, the same as an unknown token.
    let (ok, _, err) = cli(&d, &ta, &["token", "revoke", &id]);
    assert!(ok, "{err}");
    let (s, v) = d.call("GET", "/v1/volumes", &secret, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // An expired token has its own code.
    let (_, v) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "acme", "role": "reader", "expires": "1s"})),
    );
    let short = v["token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let (s, v) = d.call("GET", "/v1/volumes", &short, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("token_expired")),
        "{v}"
    );
    // The bootstrap admin token keeps working and is listed as such.
    let (s, v) = d.call("GET", "/v1/tokens", &admin, None);
    assert_eq!(s, 200);
    let boot: Vec<&Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["bootstrap"] == json!(true))
        .collect();
    assert_eq!(boot.len(), 1);
    assert_eq!(boot[0]["expires"], Value::Null);
    d.stop();
}

/// `nbdinfo --list` of a socket: the export names it shows.
fn listed(sock: &Path) -> Vec<String> {
    let o = Command::new("nbdinfo")
        .args(["--list", "--json"])
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .output()
        .expect("nbdinfo is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut names: Vec<String> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn opens(uri: &str) -> bool {
    Command::new("nbdinfo")
        .arg("--size")
        .arg(uri)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn each_tenant_has_its_own_socket_showing_only_its_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let (ta, a) = tenant(&d, "acme");
    let (tb, b) = tenant(&d, "beta");
    let (ok, uri_a, err) = cli(&d, &ta, &["volume", "attach", "disk"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&d, &tb, &["volume", "attach", "disk"]);
    assert!(ok, "{err}");
    let sock_a = std::path::absolute(data.join("sockets/acme.sock")).unwrap();
    let sock_b = data.join("sockets/beta.sock");
    assert_eq!(
        uri_a.trim(),
        format!("nbd+unix:///{a}?socket={}", sock_a.display())
    );
    use std::os::unix::fs::PermissionsExt;
    for p in [&sock_a, &sock_b] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    assert_eq!(listed(&sock_a), vec![a.clone()]);
    assert_eq!(listed(&sock_b), vec![b.clone()]);
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(listed(&data.join("nbd.sock")), both, "the admin socket");
    assert!(opens(uri_a.trim()));
    assert!(
        !opens(&format!("nbd+unix:///{b}?socket={}", sock_a.display())),
        "beta's export opened through acme's socket"
    );
    // The sockets come back at restart; a tenant's socket goes with the tenant.
    d.stop();
    let d = Daemon::start(&data);
    assert_eq!(listed(&sock_a), vec![a.clone()]);
    let admin = d.admin();
    let (s, _) = d.call(
        "DELETE",
        &format!("/v1/volumes/{b}/attachments"),
        &admin,
        None,
    );
    assert_eq!(s, 204);
    let (s, _) = d.call("DELETE", &format!("/v1/volumes/{b}"), &admin, None);
    assert_eq!(s, 204);
    let (s, v) = d.call("DELETE", "/v1/tenants/beta", &admin, None);
    assert_eq!(s, 204, "{v}");
    assert!(!sock_b.exists(), "the tenant's socket outlived it");
    // An owner given at create is the socket file's owner.
    let (ok, _, err) = cli(
        &d,
        &admin,
        &["tenant", "create", "gamma", "--socket-owner", "4242:4343"],
    );
    assert!(ok, "{err}");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(data.join("sockets/gamma.sock")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));
    let (ok, _, err) = cli(
        &d,
        &admin,
        &["tenant", "create", "delta", "--socket-owner", "bob"],
    );
    assert!(!ok && err.contains("UID:GID"), "{err}");
    let (s, _) = d.call("GET", "/v1/tenants/delta", &admin, None);
    assert_eq!(s, 404, "a refused create left a tenant behind");
    d.stop();
}

/// A qemu-io that reads `uri` in a loop (commands fed on stdin) and reports on `rx` the
/// moment a read fails or it exits. Returns the child and the receiver.
fn read_loop(args: &[String]) -> (std::process::Child, mpsc::Receiver<Instant>) {
    let mut child = Command::new("qemu-io")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-io is installed");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        while stdin.write_all(b"read -q 0 1M\n").is_ok() {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let (tx, rx) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.contains("failed") || line.contains("rror") {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
            let _ = tx.send(Instant::now());
        });
    }
    (child, rx)
}

#[test]
fn detach_ends_a_running_reader_within_a_second_and_new_opens_fail() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let (ta, _) = tenant(&d, "acme");
    let (ok, uri, err) = cli(&d, &ta, &["volume", "attach", "disk"]);
    assert!(ok, "{err}");
    let uri = uri.trim().to_string();
    let (mut child, rx) = read_loop(&["-f".into(), "raw".into(), uri.clone()]);
    // Reading for a while without failing.
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the reader failed early"
    );
    let t0 = Instant::now();
    let (ok, _, err) = cli(&d, &ta, &["volume", "detach", "disk"]);
    assert!(ok, "{err}");
    let failed = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the reader went on after detach");
    let took = failed.saturating_duration_since(t0);
    assert!(
        took < Duration::from_secs(1),
        "the reader failed {took:?} after detach"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(!opens(&uri), "a detached export opened");
    d.stop();
}

#[test]
fn revoking_a_tenants_certificates_ends_its_tls_sessions_and_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start_with(&data, &["--nbd-listen", "127.0.0.1:0"]);
    let (ta, _) = tenant(&d, "acme");
    let creds = dir.path().join("tls");
    let (ok, uri, err) = cli(
        &d,
        &ta,
        &[
            "volume",
            "attach",
            "disk",
            "--tcp",
            "--credentials-dir",
            creds.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let uri = uri.trim().to_string();
    let with_certs = format!("{uri}?tls-certificates={}", creds.display());
    assert!(opens(&with_certs), "the fresh certificate does not open");
    // The certificate has a bounded lifetime.
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((31 * 86_400).to_string())
        .arg("-in")
        .arg(creds.join("client-cert.pem"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the certificate outlives 31 days");
    let rest = uri.strip_prefix("nbds://").unwrap();
    let (hostport, export) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let (mut child, rx) = read_loop(&[
        "--object".into(),
        format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            creds.display()
        ),
        "--image-opts".into(),
        format!("driver=nbd,host={host},port={port},export={export},tls-creds=tls0"),
    ]);
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the reader failed early"
    );
    let t0 = Instant::now();
    let (ok, out, err) = cli(
        &d,
        &ta,
        &["tenant", "revoke-certificates", "acme", "-o", "json"],
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revoked"], json!(1));
    assert_eq!(v["sessions_closed"], json!(1));
    let failed = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the TLS reader went on after revocation");
    let took = failed.saturating_duration_since(t0);
    assert!(
        took < Duration::from_secs(1),
        "ended {took:?} after revocation"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(!opens(&with_certs), "a revoked certificate opened");
    // Attaching again hands out a new certificate that works.
    let (ok, _, err) = cli(
        &d,
        &ta,
        &[
            "volume",
            "attach",
            "disk",
            "--tcp",
            "--credentials-dir",
            creds.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(opens(&with_certs));
    d.stop();
}
