//! `strata serve --store etcd://...`: the daemon keeps its state in a real etcd (Debian
//! etcd-server, one member started here) and finds it again after a restart.
//!
//! Skipped, with `SKIPPED: etcd not installed`, only where no etcd binary exists
//! (`scripts/test` installs it and fails without it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// One etcd member on loopback, killed on drop.
struct Etcd {
    child: Child,
    client: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        let bin = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        });
        let Some(bin) = bin else {
            eprintln!("SKIPPED: etcd not installed (apt-get install etcd-server)");
            return None;
        };
        let (l1, l2) = (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (client, peer) = (
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port(),
        );
        drop((l1, l2));
        let dir = tempfile::tempdir().unwrap();
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .args(["--name", "m0", "--data-dir"])
            .arg(dir.path().join("m0"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("m0={p}")])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Etcd {
            child,
            client,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(e)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let o = strata()
        .args(args)
        .arg("--endpoint")
        .arg(&d.url)
        .arg("--data-dir")
        .arg(&d.data)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn serve_keeps_its_state_in_etcd_across_a_restart() {
    let Some(etcd) = Etcd::start() else {
        return;
    };
    let url = format!("etcd://127.0.0.1:{}", etcd.client);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start_with(&data, &["--store", &url]);
    let (ok, _, err) = cli(&d, &["tenant", "create", "ml"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &d,
        &["volume", "create", "ckpt", "--size", "1G", "--tenant", "ml"],
    );
    assert!(ok, "{err}");
    d.stop();
    assert!(
        !data.join("state.redb").exists(),
        "the state went to etcd, not to the embedded store"
    );
    let d = Daemon::start_with(&data, &["--store", &url]);
    let (ok, out, err) = cli(&d, &["tenant", "list", "-o", "json"]);
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    assert!(
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "ml"),
        "{out}"
    );
    let (ok, out, err) = cli(&d, &["volume", "list", "--tenant", "ml", "-o", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["name"], "ckpt", "{out}");
    assert_eq!(v["items"][0]["size"], 1u64 << 30);
    d.stop();
}

#[test]
fn serve_with_an_unreachable_etcd_fails_at_once_and_creates_nothing() {
    // Port 1 on loopback: nothing listens there.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let t0 = Instant::now();
    let o = strata()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--store", "etcd://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("etcd") && err.contains("127.0.0.1:1"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!data.exists(), "nothing was created");
    let o = strata()
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--store", "etcd://nohost"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid_argument"));
}
