//! The daemon against a hostile local user and hostile API clients: private files whatever
//! the umask, one daemon per data dir, idle connections that cannot lock anyone out.

use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{strata, Daemon};
use serde_json::json;

/// A tenant member with one 64 MiB volume, attached; returns (member token, volume id, URI).
fn attached_volume(d: &Daemon) -> (String, String, String) {
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "t1"})));
    let (_, t) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "t1", "role": "member"})),
    );
    let m = t["token"].as_str().unwrap().to_string();
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &m,
        Some(json!({"name": "v", "size": "64M"})),
    );
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    let (s, a) = d.call("POST", &format!("/v1/volumes/{vid}/attachments"), &m, None);
    assert_eq!(s, 201, "{a}");
    (m, vid, a["uri"].as_str().unwrap().to_string())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// A local non-root user for the test (created once; `useradd` is in Debian's base system).
fn unprivileged_user() -> String {
    let name = "strata-probe".to_string();
    let exists = Command::new("id")
        .arg(&name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let o = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .expect("useradd");
        assert!(
            o.status.success() || Command::new("id").arg(&name).status().unwrap().success(),
            "useradd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    name
}

#[test]
fn data_dir_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // The temp dir itself must let the probe user walk to the data dir, so that only the data
    // dir's own modes stand between it and the files.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("d");
    // The daemon inherits this umask: every mode must still come out private.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let d = Daemon::start(&data);
    rustix::process::umask(old);
    let (_, _, uri) = attached_volume(&d);
    let marker = "write -P 0x5a 0 1M";
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", marker, "-c", "flush", &uri])
        .output()
        .expect("qemu-io");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&data), 0o700, "data dir");
    let mut all = Vec::new();
    walk(&data, &mut all);
    assert!(all.iter().any(|p| p.ends_with("state.redb")));
    assert!(all.iter().any(|p| p.ends_with("dev0.img")));
    for p in &all {
        let t = std::fs::symlink_metadata(p).unwrap().file_type();
        if t.is_dir() {
            assert_eq!(mode(p), 0o700, "{}", p.display());
        } else if t.is_file() || t.is_socket() {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }
    // As another local user: nothing under the data dir can be listed, read or connected to.
    let user = unprivileged_user();
    let as_user = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", &user, "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let o = as_user(&["ls", data.to_str().unwrap()]);
    assert!(!o.status.success(), "listed the data dir");
    for p in &all {
        let o = as_user(&["head", "-c", "1", p.to_str().unwrap()]);
        assert!(!o.status.success(), "read {}", p.display());
    }
    let sock = uri.split("socket=").nth(1).unwrap();
    let o = as_user(&["nbdinfo", &uri]);
    assert!(!o.status.success(), "opened the export through {sock}");
    d.stop();
}

#[test]
fn a_second_daemon_is_refused_even_when_files_inside_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    // Whatever lock file an older version kept, the lock is on the directory itself.
    let _ = std::fs::remove_file(data.join("lock"));
    let o = strata()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by another Strata process"), "{err}");
    // The first daemon is unharmed.
    let (s, _) = d.call("GET", "/v1/volumes", &d.admin(), None);
    assert_eq!(s, 200);
    d.stop();
}

/// Raises this process's descriptor limit so the test can hold many sockets.
fn raise_nofile(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let max = l.maximum.unwrap_or(u64::MAX);
    l.current = Some(want.max(l.current.unwrap_or(0)).min(max));
    setrlimit(Resource::Nofile, l).unwrap();
}

/// One GET on a fresh connection, whatever happens: the status line, or "" on any failure.
fn raw_get(addr: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
    else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn daemon_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn idle_api_connections_cannot_lock_out_the_api_or_nbd() {
    let dir = tempfile::tempdir().unwrap();
    // Started before this process raises its own limit: the daemon must raise its own.
    let d = Daemon::start_with(
        &dir.path().join("d"),
        &["--api-max-connections", "64", "--api-header-timeout", "2"],
    );
    let (m, _, uri) = attached_volume(&d);
    raise_nofile(8192);
    let addr = d.url.trim_start_matches("http://").to_string();
    // 3,000 connections that never send a byte: more than the descriptors a daemon has with
    // the usual soft limit of 1,024.
    let mut idle = Vec::new();
    for _ in 0..3000 {
        if let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
            idle.push(s);
        }
    }
    // NBD is untouched by the API's clients.
    let o = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x11 0 64k",
            "-c",
            "read -P 0x11 0 64k",
            &uri,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The daemon holds at most its API budget of them.
    let fds = daemon_fds(d.pid());
    assert!(fds < 64 + 200, "daemon holds {fds} descriptors");
    // The idle ones are dropped after the header timeout; the API answers again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if raw_get(&addr, "/v1/volumes", &m).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the API did not answer again");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    d.stop();
}

#[test]
fn a_client_that_pauses_between_calls_is_still_answered() {
    // The header deadline and the idle timeout close pooled keep-alive connections under a
    // long-lived client; its next call must still work (the client reconnects).
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(
        &dir.path().join("d"),
        &["--api-header-timeout", "1", "--api-idle-timeout", "2"],
    );
    let admin = d.admin();
    for i in 0..3 {
        let (s, v) = d.call(
            "POST",
            "/v1/tenants",
            &admin,
            Some(json!({"name": format!("p{i}")})),
        );
        assert_eq!(s, 201, "{v}");
        std::thread::sleep(Duration::from_millis(2500));
    }
    d.stop();
}
