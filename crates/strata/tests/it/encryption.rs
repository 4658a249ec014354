//! Encryption at rest through `strata serve`: a master key file made by `strata master-key
//! create`, an encrypted volume written over NBD with a real client (nbdcopy), the device
//! file scanned for the plaintext, and restarts with a wrong key and with the right one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::common::{strata, Daemon};
use crate::qos::attached;

/// 1 MiB of a marker repeated.
fn marked(marker: &str) -> Vec<u8> {
    marker
        .as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect()
}

/// `nbdcopy` from `from` to `to` (a file or an NBD URI), flushing the destination.
fn nbdcopy(from: &str, to: &str) -> bool {
    Command::new("nbdcopy")
        .args(["--flush", from, to])
        .status()
        .expect("nbdcopy (libnbd-bin) is installed")
        .success()
}

/// Whether `needle` occurs in the data extents of the sparse file `path` (read with
/// SEEK_DATA/SEEK_HOLE: the pool's device file is gigabytes of holes).
fn file_contains(path: &Path, needle: &str) -> bool {
    let script = r#"
import os, sys
path, needle = sys.argv[1], sys.argv[2].encode()
fd = os.open(path, os.O_RDONLY)
end = os.fstat(fd).st_size
off, found = 0, False
while off < end and not found:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, off, os.SEEK_HOLE)
    while off < hole and not found:
        n = min(8 << 20, hole - off)
        os.lseek(fd, off, os.SEEK_SET)
        buf = os.read(fd, n + len(needle))
        found = needle in buf
        off += n
print("found" if found else "absent")
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(needle)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim() == "found"
}

fn uri_of(d: &Daemon, admin: &str, id: &str) -> String {
    let (s, a) = d.call(
        "POST",
        &format!("/v1/volumes/{id}/attachments"),
        admin,
        None,
    );
    assert!(s == 200 || s == 201, "{a}");
    a["uri"].as_str().unwrap().to_string()
}

#[test]
fn an_encrypted_volume_leaves_no_plaintext_and_opens_only_with_its_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (key, other) = (keys.join("master.key"), keys.join("other.key"));
    for k in [&key, &other] {
        let o = strata()
            .args(["master-key", "create"])
            .arg(k)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m = std::fs::metadata(k).unwrap();
        assert_eq!((m.len(), m.permissions().mode() & 0o777), (32, 0o600));
    }
    // An existing key is never overwritten.
    let o = strata()
        .args(["master-key", "create"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!o.status.success());

    // Without a master key an encrypted volume is refused, and nothing is recorded.
    let d = Daemon::start(&data);
    let admin = d.admin();
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "sec", "size": "64M", "encrypted": true})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("master_key_missing")),
        "{v}"
    );
    let (_, l) = d.call("GET", "/v1/volumes", &admin, None);
    assert_eq!(l["items"].as_array().unwrap().len(), 0, "{l}");
    d.stop();

    let key_arg = key.to_str().unwrap();
    let d = Daemon::start_with(&data, &["--master-key-file", key_arg]);
    let admin = d.admin();
    let (sec, sec_uri) = attached(
        &d,
        &admin,
        json!({"name": "sec", "size": "64M", "encrypted": true}),
    );
    let (plain, plain_uri) = attached(&d, &admin, json!({"name": "pub", "size": "64M"}));
    let (_, v) = d.call("GET", &format!("/v1/volumes/{sec}"), &admin, None);
    assert_eq!(v["encrypted"], true, "{v}");
    let secret = dir.path().join("secret.bin");
    let public = dir.path().join("public.bin");
    std::fs::write(&secret, marked("SECRET-MARKER-7f3a9c1e|")).unwrap();
    std::fs::write(&public, marked("PLAIN-MARKER-2b8d4e6f|")).unwrap();
    assert!(nbdcopy(secret.to_str().unwrap(), &sec_uri));
    assert!(nbdcopy(public.to_str().unwrap(), &plain_uri));
    // A snapshot and a clone share the key and read the data.
    let (s, snap) = d.call(
        "POST",
        &format!("/v1/volumes/{sec}/snapshots"),
        &admin,
        Some(json!({"name": "s1"})),
    );
    assert_eq!(s, 201, "{snap}");
    let (s, clone) = d.call(
        "POST",
        &format!("/v1/snapshots/{}/clone", snap["id"].as_str().unwrap()),
        &admin,
        Some(json!({"name": "sec-clone"})),
    );
    assert_eq!(s, 201, "{clone}");
    assert_eq!(clone["encrypted"], true, "{clone}");
    let clone_uri = uri_of(&d, &admin, clone["id"].as_str().unwrap());
    let back = dir.path().join("back.bin");
    assert!(nbdcopy(&clone_uri, back.to_str().unwrap()));
    assert_eq!(
        std::fs::read(&back).unwrap()[..1 << 20],
        std::fs::read(&secret).unwrap()[..]
    );
    d.stop();

    // The device file: the plain volume's marker is there (the scan works), the encrypted
    // one's is not.
    let dev = data.join("pools/default/dev0.img");
    assert!(
        file_contains(&dev, "PLAIN-MARKER-2b8d4e6f|"),
        "control: plain data is found"
    );
    assert!(
        !file_contains(&dev, "SECRET-MARKER-7f3a9c1e|"),
        "the encrypted volume's plaintext is on the device"
    );
    // Nor is the master key kept in the data dir.
    let key_bytes = std::fs::read(&key).unwrap();
    for e in walk(&data) {
        let b = std::fs::read(&e).unwrap_or_default();
        assert!(
            !b.windows(32).any(|w| w == key_bytes.as_slice()),
            "{} holds the master key",
            e.display()
        );
    }

    // Another master key: the daemon starts, the plain volume reads, the encrypted one
    // refuses (an error, never other bytes).
    let d = Daemon::start_with(&data, &["--master-key-file", other.to_str().unwrap()]);
    let admin = d.admin();
    let plain_uri = uri_of(&d, &admin, &plain);
    let sec_uri = uri_of(&d, &admin, &sec);
    let out = dir.path().join("out.bin");
    assert!(nbdcopy(&plain_uri, out.to_str().unwrap()));
    assert_eq!(
        std::fs::read(&out).unwrap()[..1 << 20],
        std::fs::read(&public).unwrap()[..]
    );
    let _ = std::fs::remove_file(&out);
    assert!(
        !nbdcopy(&sec_uri, out.to_str().unwrap()),
        "an encrypted volume read without its master key"
    );
    assert!(
        d.warnings().contains("refuse I/O"),
        "the start warns of the locked key: {}",
        d.warnings()
    );
    d.stop();

    // The right key again: everything reads.
    let d = Daemon::start_with(&data, &["--master-key-file", key_arg]);
    let admin = d.admin();
    let sec_uri = uri_of(&d, &admin, &sec);
    let _ = std::fs::remove_file(&out);
    assert!(nbdcopy(&sec_uri, out.to_str().unwrap()));
    assert_eq!(
        std::fs::read(&out).unwrap()[..1 << 20],
        std::fs::read(&secret).unwrap()[..]
    );
    // A key file inside the data dir is refused: it would protect nothing.
    let inside = data.join("master.key");
    std::fs::copy(&key, &inside).unwrap();
    d.stop();
    let o = strata()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--master-key-file")
        .arg(&inside)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("data dir"), "{err}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_master_key_rotates_on_every_device_and_only_the_new_key_opens_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (old, new) = (keys.join("old.key"), keys.join("new.key"));
    for k in [&old, &new] {
        assert!(strata()
            .args(["master-key", "create"])
            .arg(k)
            .status()
            .unwrap()
            .success());
    }
    let d = Daemon::start_with(&data, &["--master-key-file", old.to_str().unwrap()]);
    let admin = d.admin();
    let cli = |d: &Daemon, args: &[&str]| {
        strata()
            .args(args)
            .args(["--endpoint", &d.url, "--token", &admin])
            .output()
            .unwrap()
    };
    // Encrypted volumes on the default device and on a two-device pool (two copies).
    let devs: Vec<_> = (0..2)
        .map(|i| data.join(format!("devices/k{i}.img")))
        .collect();
    for f in &devs {
        std::fs::File::create(f)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
    }
    let o = cli(
        &d,
        &[
            "pool",
            "create",
            "p",
            "--device",
            devs[0].to_str().unwrap(),
            "--device",
            devs[1].to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, a_uri) = attached(
        &d,
        &admin,
        json!({"name": "a", "size": "16M", "encrypted": true}),
    );
    let (b, b_uri) = attached(
        &d,
        &admin,
        json!({"name": "b", "size": "16M", "encrypted": true, "pool": "p", "replicas": 2}),
    );
    let secret = dir.path().join("secret.bin");
    std::fs::write(&secret, marked("ROTATE-MARKER-5c1d|")).unwrap();
    assert!(nbdcopy(secret.to_str().unwrap(), &a_uri));
    assert!(nbdcopy(secret.to_str().unwrap(), &b_uri));
    // A key file inside the data dir is refused; nothing changes.
    let inside = data.join("devices/inside.key");
    std::fs::copy(&new, &inside).unwrap();
    let (s, v) = d.call(
        "POST",
        "/v1/master-key/rotate",
        &admin,
        Some(json!({"key_file": inside})),
    );
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("key_file")),
        "{v}"
    );
    // Rotation: every device re-wrapped, the volumes still read meanwhile.
    let o = cli(&d, &["master-key", "rotate", new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    for dev in ["default-d0", "p-d0", "p-d1"] {
        assert!(out.contains(dev), "{out}");
    }
    let back = dir.path().join("back.bin");
    assert!(nbdcopy(&b_uri, back.to_str().unwrap()));
    assert_eq!(
        std::fs::read(&back).unwrap()[..1 << 20],
        std::fs::read(&secret).unwrap()[..]
    );
    d.stop();
    // The old key opens nothing encrypted any more; the new one opens everything.
    for (key, opens) in [(&old, false), (&new, true)] {
        let d = Daemon::start_with(&data, &["--master-key-file", key.to_str().unwrap()]);
        let admin = d.admin();
        for id in [&a, &b] {
            let uri = uri_of(&d, &admin, id);
            let _ = std::fs::remove_file(&back);
            let read = nbdcopy(&uri, back.to_str().unwrap());
            assert_eq!(read, opens, "volume {id} with {}", key.display());
            if opens {
                assert_eq!(
                    std::fs::read(&back).unwrap()[..1 << 20],
                    std::fs::read(&secret).unwrap()[..]
                );
            }
        }
        d.stop();
    }
}
