//! Pools of devices and replicated volumes through `strata serve`, with loop devices as the
//! devices and real NBD clients: a pool made with the CLI, a 2-copy volume written while one
//! of its devices fails (a loop device shrunk under it: its I/O returns errors), the client
//! seeing no error and the bytes intact, the volume and device shown degraded and faulted in
//! the API, the CLI and `/metrics`, and the guard rails of adding devices.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

/// A loop device over a sparse file, detached on drop.
pub(crate) struct Loop {
    pub dev: String,
    pub file: PathBuf,
}

impl Loop {
    pub(crate) fn new(file: &Path, size: u64) -> Loop {
        let f = std::fs::File::create(file).unwrap();
        f.set_len(size).unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup (mount) is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
            file: file.to_path_buf(),
        }
    }

    /// Makes the device fail: its backing file is cut to 1 MiB and the loop device told, so
    /// every read and write past that returns an error, as a dying disk's would.
    pub(crate) fn fail(&self) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let s = Command::new("losetup")
            .args(["-c", &self.dev])
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn run(d: &Daemon, admin: &str, args: &[&str]) -> std::process::Output {
    strata()
        .args(args)
        .args(["--endpoint", &d.url, "--token", admin])
        .output()
        .unwrap()
}

fn ok(d: &Daemon, admin: &str, args: &[&str]) -> String {
    let o = run(d, admin, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn json_of(d: &Daemon, admin: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&ok(d, admin, &a)).unwrap()
}

pub(crate) fn random_file(path: &Path, mib: usize) {
    let s = Command::new("head")
        .args(["-c", &format!("{}", mib << 20), "/dev/urandom"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap();
    assert!(s.success());
}

#[test]
fn a_two_copy_volume_keeps_serving_when_a_device_fails_and_is_rebuilt_on_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let a = Loop::new(&dir.path().join("a.img"), 256 << 20);
    let b = Loop::new(&dir.path().join("b.img"), 256 << 20);
    let b_spec = format!("{}:ssd", b.dev);
    ok(
        &d,
        &admin,
        &[
            "pool",
            "create",
            "fast",
            "--device",
            &a.dev,
            "--device",
            &b_spec,
            "--replicas",
            "2",
        ],
    );
    let p = json_of(&d, &admin, &["pool", "show", "fast"]);
    assert_eq!(p["replicas"], 2, "{p}");
    let devs = p["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2, "{p}");
    assert!(devs.iter().all(|x| x["class"] == "ssd"), "{p}");
    assert!(devs.iter().all(|x| x["health"] == "healthy"), "{p}");
    // The daemon holds its block devices exclusively: another exclusive open (mount, mkfs)
    // is refused by the kernel.
    let o = Command::new("python3")
        .args(["-c", "import os,sys\ntry:\n os.open(sys.argv[1], os.O_RDONLY|os.O_EXCL); print('opened')\nexcept OSError as e: print(e.errno)"])
        .arg(&a.dev)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "16", "EBUSY");
    // Three copies need three failure domains: refused, nothing recorded.
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "ckpt", "size": "64M", "pool": "fast", "replicas": 3})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("not_enough_domains")),
        "{v}"
    );
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "ckpt", "size": "64M", "pool": "fast"})),
    );
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    let copies: Vec<String> = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(copies.len(), 2, "{v}");
    assert_ne!(copies[0], copies[1], "copies on distinct devices: {v}");
    let (s, at) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        None,
    );
    assert!(s == 200 || s == 201, "{at}");
    let uri = at["uri"].as_str().unwrap().to_string();
    let pool = json_of(&d, &admin, &["pool", "show", "fast"]);
    let path_of = |id: &str| -> String {
        pool["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let loop_of = |id: &str| [&a, &b].into_iter().find(|l| l.dev == path_of(id)).unwrap();

    // Both copies get the writes: write half, fail the second copy's device, write it all.
    let src = dir.path().join("src.img");
    random_file(&src, 64);
    let half = dir.path().join("half.img");
    std::fs::write(&half, &std::fs::read(&src).unwrap()[..32 << 20]).unwrap();
    assert!(nbdcopy(&half, &uri));
    loop_of(&copies[1]).fail();
    assert!(nbdcopy(&src, &uri), "the client saw no error");
    assert_same(&src, &uri);
    // fio with verification on the degraded volume, in its last 16 MiB: no error.
    let r = crate::qos::fio(
        &uri,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--offset=48M",
            "--size=16M",
            "--verify=crc32c",
            "--do_verify=1",
            "--iodepth=8",
        ],
    );
    assert_eq!(r["jobs"][0]["error"], 0, "{r}");
    let written = read_all(&uri, &dir.path().join("w.img"));
    assert!(written[..48 << 20] == std::fs::read(&src).unwrap()[..48 << 20]);

    // Degraded in the API, the CLI and /metrics; the device faulted with its errors counted.
    let (s, v) = d.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(s, 200);
    assert_eq!(v["health"], "degraded", "{v}");
    assert_eq!(v["healthy_copies"], 1, "{v}");
    let shown = ok(&d, &admin, &["volume", "show", "ckpt"]);
    assert!(shown.contains("degraded"), "{shown}");
    let pool_now = json_of(&d, &admin, &["pool", "show", "fast"]);
    let bad = pool_now["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == copies[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(bad["health"], "faulted", "{pool_now}");
    assert!(bad["write_errors"].as_u64().unwrap() >= 1, "{pool_now}");
    let m = d.metrics();
    let l = format!(
        "strata_volume_copies{{volume=\"{vid}\",name=\"ckpt\",tenant=\"default\",state=\"healthy\"}} 1"
    );
    assert!(m.contains(&l), "{l} in {m}");
    let l = format!(
        "strata_device_healthy{{pool=\"fast\",device=\"{}\",class=\"ssd\"}} 0",
        copies[1]
    );
    assert!(m.contains(&l), "{l} in {m}");
    promtool_check(&m);
    // A layer change needs every copy.
    let (s, v) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/snapshots"),
        &admin,
        Some(json!({"name": "s1"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_degraded")),
        "{v}"
    );

    // A new device: the lost copy is rebuilt there by itself, and the volume is healthy again.
    let c = Loop::new(&dir.path().join("c.img"), 256 << 20);
    ok(&d, &admin, &["pool", "add-device", "fast", &c.dev]);
    // `volume show --watch` follows the rebuild and returns once the volume is healthy.
    let watched = ok(&d, &admin, &["volume", "show", "ckpt", "--watch"]);
    assert!(watched.contains("healthy"), "{watched}");
    let v = wait_healthy(&d, &admin, &vid);
    let now: Vec<&str> = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(now[0], copies[0], "{v}");
    assert_ne!(now[1], copies[1], "the lost copy moved: {v}");
    let pool_now = json_of(&d, &admin, &["pool", "show", "fast"]);
    let holder = pool_now["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == now[1])
        .unwrap();
    assert_eq!(holder["path"], c.dev.as_str(), "{pool_now}");
    // The fault, the rebuild and its end are in the audit log, done by the daemon (the end is
    // recorded just after the copy turns healthy: waited for).
    for (action, resource) in [
        ("device.faulted", copies[1].as_str()),
        ("volume.rebuild", vid.as_str()),
        ("volume.resynced", vid.as_str()),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, log) = d.call("GET", "/v1/audit?limit=200", &admin, None);
            if log["items"].as_array().unwrap().iter().any(|e| {
                e["action"] == action && e["resource"] == resource && e["actor"] == "daemon"
            }) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{action} {resource} in {log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // The rebuilt copy alone serves the same bytes: fail the copy that survived, read again.
    loop_of(&copies[0]).fail();
    let again = read_all(&uri, &dir.path().join("again.img"));
    assert!(again == written, "the rebuilt copy holds the bytes written");
    d.stop();
}

/// The whole export at `uri` saved as `file` (an image to compare against later).
fn save(uri: &str, file: &Path) {
    let tmp = file.with_extension("tmp");
    std::fs::write(file, read_all(uri, &tmp)).unwrap();
    let _ = std::fs::remove_file(tmp);
}

#[test]
fn a_rebuilt_copy_carries_the_snapshots_and_serves_them_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let a = Loop::new(&dir.path().join("a.img"), 256 << 20);
    let b = Loop::new(&dir.path().join("b.img"), 256 << 20);
    ok(
        &d,
        &admin,
        &[
            "pool", "create", "fast", "--device", &a.dev, "--device", &b.dev,
        ],
    );
    let (vid, uri, copies) = volume_in(&d, &admin, "fast", "ckpt", "64M", 2);
    let pool = json_of(&d, &admin, &["pool", "show", "fast"]);
    let loop_of = |id: &str| {
        let path = pool["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string();
        [&a, &b].into_iter().find(|l| l.dev == path).unwrap()
    };
    let snap = |name: &str| {
        let (s, v) = d.call(
            "POST",
            &format!("/v1/volumes/{vid}/snapshots"),
            &admin,
            Some(json!({"name": name})),
        );
        assert_eq!(s, 201, "{v}");
    };
    // Two snapshots with different data between them, and live data after the second.
    let src = dir.path().join("src.img");
    random_file(&src, 32);
    assert!(nbdcopy(&src, &uri));
    snap("s1");
    let s1 = dir.path().join("s1.img");
    save(&uri, &s1);
    qemu_io(
        &uri,
        &[
            "write -P 0x5a 40M 8M",
            "discard 0 4M",
            "write -P 0x11 10M 64k",
            "flush",
        ],
    );
    snap("s2");
    let s2 = dir.path().join("s2.img");
    save(&uri, &s2);
    qemu_io(&uri, &["write -P 0x33 8M 4M", "discard 44M 1M", "flush"]);
    let live = dir.path().join("live.img");
    save(&uri, &live);
    let images = [&s1, &s2, &live].map(|f| std::fs::read(f).unwrap());
    assert!(images[0] != images[1] && images[1] != images[2] && images[0] != images[2]);

    // A third device, then the second copy's device fails: the copy is rebuilt there, with
    // both snapshots.
    let c = Loop::new(&dir.path().join("c.img"), 256 << 20);
    ok(&d, &admin, &["pool", "add-device", "fast", &c.dev]);
    loop_of(&copies[1]).fail();
    qemu_io(&uri, &["write -P 0x44 20M 1M", "flush"]);
    save(&uri, &live);
    let v = wait_healthy(&d, &admin, &vid);
    assert_ne!(
        v["copies"][1],
        copies[1].as_str(),
        "the lost copy moved: {v}"
    );
    // The device that survived fails too: the rebuilt copy alone serves the snapshots and
    // the live data, identical to what was saved before.
    loop_of(&copies[0]).fail();
    assert_same(&live, &uri);
    for (name, want) in [("s1", &s1), ("s2", &s2)] {
        let snap_uri = ok(&d, &admin, &["volume", "attach", &format!("ckpt@{name}")]);
        assert_same(want, snap_uri.trim());
    }
    d.stop();
}

/// A volume of `size` with `replicas` copies in `pool`, attached: (id, URI, copies' devices).
fn volume_in(
    d: &Daemon,
    admin: &str,
    pool: &str,
    name: &str,
    size: &str,
    replicas: u64,
) -> (String, String, Vec<String>) {
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        admin,
        Some(json!({"name": name, "size": size, "pool": pool, "replicas": replicas})),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, at) = d.call(
        "POST",
        &format!("/v1/volumes/{id}/attachments"),
        admin,
        None,
    );
    let copies = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (id, at["uri"].as_str().unwrap().to_string(), copies)
}

/// Waits (at most two minutes) until volume `id` is healthy with nothing left to resync; its
/// detail then.
pub(crate) fn wait_healthy(d: &Daemon, admin: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, v) = d.call("GET", &format!("/v1/volumes/{id}"), admin, None);
        if v["health"] == "healthy" && v["resync"].as_array().is_some_and(|r| r.is_empty()) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not healthy: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `qemu-img compare`: the export at `uri` holds exactly the bytes of `file`.
pub(crate) fn assert_same(file: &Path, uri: &str) {
    let o = Command::new("qemu-img")
        .args([
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            file.to_str().unwrap(),
            uri,
        ])
        .output()
        .expect("qemu-img");
    assert!(
        o.status.success(),
        "identical: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub(crate) fn nbdcopy(from: &Path, to: &str) -> bool {
    Command::new("nbdcopy")
        .args(["--flush", from.to_str().unwrap(), to])
        .status()
        .expect("nbdcopy (libnbd-bin) is installed")
        .success()
}

/// Runs qemu-io commands on the export at `uri` (read-write), asserting they succeed.
fn qemu_io(uri: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let o = c.arg(uri).output().expect("qemu-io");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && !out.contains("failed"),
        "{cmds:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The whole export at `uri`, read with nbdcopy through `tmp`.
/// A pool `p` of two `mib` MiB file devices under `data_dir`'s `devices/` (`extra`: more
/// `pool create` arguments); the files.
fn file_pool(d: &Daemon, admin: &str, data_dir: &Path, mib: u64, extra: &[&str]) -> Vec<PathBuf> {
    let devdir = data_dir.join("devices");
    let files: Vec<PathBuf> = (0..2).map(|i| devdir.join(format!("dev{i}.img"))).collect();
    for f in &files {
        std::fs::File::create(f)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
    }
    let (f0, f1) = (files[0].to_str().unwrap(), files[1].to_str().unwrap());
    let mut args = vec!["pool", "create", "p", "--device", f0, "--device", f1];
    args.extend_from_slice(extra);
    ok(d, admin, &args);
    files
}

/// Waits (at most a minute) for the audit log's `volume.resynced` of `vid` (recorded just
/// after the copy turns healthy) and returns the bytes it says were copied, with the log.
fn resynced_bytes(d: &Daemon, admin: &str, vid: &str) -> (u64, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (done, log) = loop {
        let (_, log) = d.call("GET", "/v1/audit?limit=100", admin, None);
        let found = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "volume.resynced" && e["resource"] == vid)
            .cloned();
        if let Some(e) = found {
            break (e, log);
        }
        assert!(std::time::Instant::now() < deadline, "resynced in {log}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let copied = done["outcome"]
        .as_str()
        .unwrap()
        .split_once('(')
        .and_then(|(_, r)| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{done}"));
    (copied, log)
}

pub(crate) fn read_all(uri: &str, tmp: &Path) -> Vec<u8> {
    let s = Command::new("nbdcopy")
        .args([uri, tmp.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(s.success(), "nbdcopy read");
    std::fs::read(tmp).unwrap()
}

#[test]
fn devices_are_refused_with_stable_codes_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let call = |body: Value| d.call("POST", "/v1/pools", &admin, Some(body));
    // A regular file outside the device directories: never formatted.
    let outside = dir.path().join("outside.img");
    std::fs::write(&outside, b"precious").unwrap();
    let (s, v) = call(json!({"name": "p", "devices": [{"path": outside}], "force": true}));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("device_unusable")),
        "{v}"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    // A regular file under the data dir's devices/: taken, mode 0600.
    let devdir = dir.path().join("d/devices");
    let good = devdir.join("one.img");
    std::fs::File::create(&good)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let (s, v) = call(json!({"name": "p", "devices": [{"path": good}]}));
    assert_eq!(s, 201, "{v}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&good).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same path again: in use. A device with data that is not Strata's: not empty.
    let (s, v) = d.call(
        "POST",
        "/v1/pools/p/devices",
        &admin,
        Some(json!({"path": good})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("device_in_use")),
        "{v}"
    );
    let dirty = devdir.join("dirty.img");
    std::fs::write(&dirty, vec![7u8; 8 << 20]).unwrap();
    let (s, v) = d.call(
        "POST",
        "/v1/pools/p/devices",
        &admin,
        Some(json!({"path": dirty})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("device_not_empty")),
        "{v}"
    );
    assert_eq!(std::fs::read(&dirty).unwrap()[..4], [7, 7, 7, 7]);
    // A mounted block device (the root file system's, when it is a block device) is held by
    // the kernel: refused.
    if let Some(root) = root_block_device() {
        let (s, v) = d.call(
            "POST",
            "/v1/pools/p/devices",
            &admin,
            Some(json!({"path": root, "force": true})),
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (409, Some("device_unusable")),
            "{root}: {v}"
        );
    }
    // Three copies in a one-device pool: refused, nothing recorded.
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "x", "size": "8M", "pool": "p", "replicas": 3})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("not_enough_domains")),
        "{v}"
    );
    let (_, l) = d.call("GET", "/v1/volumes", &admin, None);
    assert_eq!(l["items"].as_array().unwrap().len(), 0, "{l}");
    // A device holding a copy stays; the last device stays; an unknown device is 404.
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "x", "size": "8M", "pool": "p"})),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = d.call("DELETE", "/v1/pools/p/devices/p-d0", &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("device_in_use")),
        "{v}"
    );
    let (s, v) = d.call("DELETE", "/v1/pools/p/devices/p-d9", &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("device_not_found")),
        "{v}"
    );
    d.stop();
}

/// The block device the root file system is mounted from, if it is one.
fn root_block_device() -> Option<String> {
    let m = std::fs::read_to_string("/proc/self/mounts").ok()?;
    m.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .find(|(dev, at)| *at == "/" && dev.starts_with("/dev/"))
        .map(|(dev, _)| dev.to_string())
}

/// Offsets in `file` of the 4 KiB blocks of `data` (each found once, at a block boundary).
fn blocks_in_file(file: &Path, data: &[u8], blocks: &[usize]) -> Vec<u64> {
    let img = std::fs::read(file).unwrap();
    blocks
        .iter()
        .map(|&b| {
            let needle = &data[b * 4096..(b + 1) * 4096];
            let at = img
                .chunks(4096)
                .position(|c| c == needle)
                .unwrap_or_else(|| panic!("block {b} is in {}", file.display()));
            (at * 4096) as u64
        })
        .collect()
}

fn flip(file: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at + 100).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at + 100).unwrap();
}

#[test]
fn scrub_repairs_every_flipped_block_of_a_replicated_volume_and_reports_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let files = file_pool(&d, &admin, &dir.path().join("d"), 128, &[]);
    let mk = |name: &str, replicas: u64| {
        let (id, uri, _) = volume_in(&d, &admin, "p", name, "8M", replicas);
        (id, uri)
    };
    let (rid, ruri) = mk("twice", 2);
    let (sid, suri) = mk("once", 1);
    // The replicated volume's write-intent log is the owner's only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let log = dir.path().join(format!("d/replicas/{rid}.intent"));
    let mode = std::fs::metadata(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", log.display());
    let src = dir.path().join("src.img");
    random_file(&src, 8);
    // Other bytes for the single copy: a block is found in a device file by its content.
    let src1 = dir.path().join("src1.img");
    random_file(&src1, 8);
    assert!(nbdcopy(&src, &ruri));
    assert!(nbdcopy(&src1, &suri));
    let data = std::fs::read(&src).unwrap();
    let data1 = std::fs::read(&src1).unwrap();
    let (_, single) = d.call("GET", &format!("/v1/volumes/{sid}"), &admin, None);
    let single_dev = single["copies"][0].as_str().unwrap().to_string();
    let file_of = |dev: &str| -> PathBuf {
        if dev == "p-d0" {
            files[0].clone()
        } else {
            files[1].clone()
        }
    };
    // Five blocks of the replicated volume's second copy flipped, and one of the single copy.
    let (_, twice) = d.call("GET", &format!("/v1/volumes/{rid}"), &admin, None);
    let second = twice["copies"][1].as_str().unwrap().to_string();
    let hit = [3usize, 300, 700, 1200, 1900];
    for at in blocks_in_file(&file_of(&second), &data, &hit) {
        flip(&file_of(&second), at);
    }
    let [lone] = blocks_in_file(&file_of(&single_dev), &data1, &[1000])[..] else {
        unreachable!()
    };
    flip(&file_of(&single_dev), lone);
    // Scrub (the CLI waits for it): every flipped block of the 2-copy volume repaired, the
    // single copy's reported with its volume and offset.
    let r = json_of(&d, &admin, &["pool", "scrub", "p"]);
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(r["bad_blocks"], 6, "{r}");
    assert_eq!(r["repaired"], 5, "{r}");
    let bad = r["unrepaired"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{r}");
    assert_eq!(bad[0]["volume"], sid.as_str(), "{r}");
    assert_eq!(bad[0]["offset"], 1000 * 4096, "{r}");
    assert!(r["done_bytes"].as_u64().unwrap() >= 3 * (8 << 20), "{r}");
    let pool = json_of(&d, &admin, &["pool", "show", "p"]);
    let dev = pool["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == second.as_str())
        .unwrap()
        .clone();
    assert!(dev["checksum_errors"].as_u64().unwrap() >= 5, "{pool}");
    assert!(dev["repaired"].as_u64().unwrap() >= 5, "{pool}");
    let m = d.metrics();
    assert!(
        m.contains("strata_device_checksum_errors_total{pool=\"p\""),
        "{m}"
    );
    // The repaired volume reads right whichever copy serves it, and a second scrub finds
    // only the block it could not repair.
    assert_same(&src, &ruri);
    let r = json_of(&d, &admin, &["pool", "scrub", "p"]);
    assert_eq!(
        (r["bad_blocks"].as_u64(), r["repaired"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    // Bad input changes nothing.
    let (s, v) = d.call(
        "POST",
        "/v1/pools/p/scrub",
        &admin,
        Some(json!({"rate": -1})),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.call("POST", "/v1/pools/nosuch/scrub", &admin, Some(json!({})));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("pool_not_found")),
        "{v}"
    );
    d.stop();
}

/// The daemon scrubs every pool by itself (`--scrub-interval`): blocks flipped while it was
/// stopped are repaired by a scrub nobody asked for, its result is stored and audited, and
/// it is still shown after a restart.
#[test]
fn a_scheduled_scrub_repairs_by_itself_and_its_result_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("d");
    let d = Daemon::start_with(&data_dir, &["--scrub-interval", "off"]);
    let admin = d.admin();
    let files = file_pool(&d, &admin, &data_dir, 64, &[]);
    let (id, uri, copies) = volume_in(&d, &admin, "p", "v", "8M", 2);
    let src = dir.path().join("src.img");
    random_file(&src, 8);
    assert!(nbdcopy(&src, &uri));
    let data = std::fs::read(&src).unwrap();
    // Nothing scrubs with the schedule off.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let st = json_of(&d, &admin, &["pool", "scrub-status", "p"]);
    assert_eq!(st["state"], "idle", "{st}");
    d.stop();
    let second = if copies[1] == "p-d0" {
        &files[0]
    } else {
        &files[1]
    };
    for at in blocks_in_file(second, &data, &[10, 900, 1800]) {
        flip(second, at);
    }
    let flipped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let d = Daemon::start_with(&data_dir, &["--scrub-interval", "2s", "--scrub-rate", "0"]);
    // The first scheduled scrub finds the three blocks and repairs them; later ones find none.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let repairing = loop {
        let st = json_of(&d, &admin, &["pool", "scrub-status", "p"]);
        if st["state"] == "done" && st["bad_blocks"].as_u64().unwrap_or(0) > 0 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled scrub: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        (
            repairing["bad_blocks"].as_u64(),
            repairing["repaired"].as_u64()
        ),
        (Some(3), Some(3)),
        "{repairing}"
    );
    assert!(
        repairing["started"].as_u64().unwrap() >= flipped,
        "{repairing}"
    );
    assert_same(&src, &uri);
    // Stored and audited by the daemon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, log) = d.call("GET", "/v1/audit?limit=200", &admin, None);
        if log["items"].as_array().unwrap().iter().any(|e| {
            e["action"] == "pool.scrubbed"
                && e["resource"] == "p"
                && e["actor"] == "daemon"
                && e["outcome"].as_str().unwrap_or("").contains("3 repaired")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pool.scrubbed in {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    d.stop();
    // After a restart with the schedule off, the last stored scrub is shown (done, or
    // interrupted if the stop came during a later one), never `idle`.
    let d = Daemon::start_with(&data_dir, &["--scrub-interval", "off"]);
    let st = json_of(&d, &admin, &["pool", "scrub-status", "p"]);
    assert!(
        st["state"] == "done" || st["state"] == "interrupted",
        "stored: {st}"
    );
    assert!(
        st["started"].as_u64() >= repairing["started"].as_u64(),
        "{st} after {repairing}"
    );
    let (_, v) = d.call("GET", &format!("/v1/volumes/{id}"), &admin, None);
    assert_eq!(v["health"], "healthy", "{v}");
    // A bad interval is refused at start with its code.
    let out = strata()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--scrub-interval", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_argument: --scrub-interval"), "{err}");
    d.stop();
}

/// A copy a crash left behind (here: the volume's name on a device its record does not name,
/// as an interrupted move leaves it) is deleted at the next start and audited; the volume its
/// record names keeps its bytes.
#[test]
fn a_copy_no_record_names_is_swept_at_start() {
    use std::sync::Arc;
    use strata_block::{BlockDevice, FileDevice, Pool};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("d");
    let d = Daemon::start(&data_dir);
    let admin = d.admin();
    let files = file_pool(&d, &admin, &data_dir, 64, &[]);
    let (id, uri, copies) = volume_in(&d, &admin, "p", "keep", "8M", 1);
    let src = dir.path().join("src.img");
    random_file(&src, 8);
    assert!(nbdcopy(&src, &uri));
    d.stop();
    // The device that does not hold the copy gets an engine volume of the same name, written.
    let (other, other_id) = if copies[0] == "p-d0" {
        (&files[1], "p-d1")
    } else {
        (&files[0], "p-d0")
    };
    let engine = |f: &Path| {
        Pool::open(vec![
            Arc::new(FileDevice::open(f).unwrap()) as Arc<dyn BlockDevice>
        ])
        .unwrap()
    };
    {
        let e = engine(other);
        let v = e.create_volume(&id, 8 << 20, None).unwrap();
        e.write(v, 0, &vec![0x5a; 4 << 20]).unwrap();
        e.flush().unwrap();
        assert_eq!(e.volumes().len(), 1);
    }
    let d = Daemon::start(&data_dir);
    let (_, log) = d.call("GET", "/v1/audit?limit=100", &admin, None);
    let swept: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "volume.orphan_removed")
        .collect();
    assert_eq!(swept.len(), 1, "{log}");
    assert_eq!(swept[0]["resource"], id.as_str(), "{log}");
    assert_eq!(swept[0]["actor"], "daemon", "{log}");
    assert!(
        swept[0]["outcome"].as_str().unwrap().contains(other_id),
        "{log}"
    );
    let (_, at) = d.call(
        "POST",
        &format!("/v1/volumes/{id}/attachments"),
        &admin,
        None,
    );
    assert_same(&src, at["uri"].as_str().unwrap_or(&uri));
    d.stop();
    assert!(engine(other).volumes().is_empty(), "the orphan is gone");
    let held = if other == &files[0] {
        &files[1]
    } else {
        &files[0]
    };
    assert_eq!(engine(held).volumes().len(), 1, "the recorded copy stays");
}

/// A device that faulted at run time and came back is brought online without a restart
/// (`strata pool online-device`): its copy resyncs only what was written while it was away,
/// and then alone serves every byte.
#[test]
fn a_faulted_device_that_comes_back_goes_online_and_resyncs_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let a = Loop::new(&dir.path().join("a.img"), 128 << 20);
    let b = Loop::new(&dir.path().join("b.img"), 128 << 20);
    ok(
        &d,
        &admin,
        &[
            "pool",
            "create",
            "p",
            "--device",
            &a.dev,
            "--device",
            &b.dev,
            "--replicas",
            "2",
        ],
    );
    let (vid, uri, copies) = volume_in(&d, &admin, "p", "v", "32M", 2);
    let src = dir.path().join("src.img");
    random_file(&src, 32);
    assert!(nbdcopy(&src, &uri));
    let mut want = std::fs::read(&src).unwrap();
    // The second copy's device as it stands (flushed, idle), then it dies.
    let (second, first) = if copies[1] == "p-d1" {
        (&b, &a)
    } else {
        (&a, &b)
    };
    let saved = dir.path().join("saved.img");
    std::fs::copy(&second.file, &saved).unwrap();
    second.fail();
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x3c 4M 2M", &uri])
        .output()
        .expect("qemu-io");
    assert!(
        o.status.success(),
        "no client error: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    want[4 << 20..6 << 20].fill(0x3c);
    let dev_of = |pool: &Value, id: &str| -> Value {
        pool["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    let pool = json_of(&d, &admin, &["pool", "show", "p"]);
    assert_eq!(dev_of(&pool, &copies[1])["health"], "faulted", "{pool}");
    // Nowhere to rebuild (two devices): it stays degraded until the device is back.
    let (_, v) = d.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(v["health"], "degraded", "{v}");
    // Back (the same bytes it held), told to the kernel, then to the daemon.
    std::fs::copy(&saved, &second.file).unwrap();
    let s = Command::new("losetup")
        .args(["-c", &second.dev])
        .status()
        .unwrap();
    assert!(s.success());
    let pool = json_of(&d, &admin, &["pool", "online-device", "p", &copies[1]]);
    assert_eq!(dev_of(&pool, &copies[1])["health"], "healthy", "{pool}");
    wait_healthy(&d, &admin, &vid);
    let (copied, done) = resynced_bytes(&d, &admin, &vid);
    let (_, log) = d.call("GET", "/v1/audit?limit=100", &admin, None);
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "device.online"
                && e["resource"] == copies[1].as_str()
                && e["actor"] == "daemon"),
        "{log}"
    );
    assert!(
        (2 << 20..=4 << 20).contains(&copied),
        "copied {copied} of 32 MiB: {done}"
    );
    // Online again: a healthy device is left as it is. An unknown one: 404.
    let (s, v) = d.call(
        "POST",
        &format!("/v1/pools/p/devices/{}/online", copies[1]),
        &admin,
        None,
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.call("POST", "/v1/pools/p/devices/p-d9/online", &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("device_not_found")),
        "{v}"
    );
    // The copy that came back alone serves every write.
    first.fail();
    let got = read_all(&uri, &dir.path().join("got.img"));
    assert!(got == want, "the device brought back holds every write");
    d.stop();
}

#[test]
fn a_device_away_while_its_volume_is_written_resyncs_only_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut d = Daemon::start(&data);
    let admin = d.admin();
    let files = file_pool(&d, &admin, &data, 256, &["--replicas", "2"]);
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "v", "size": "64M", "pool": "p"})),
    );
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    let attach = |d: &Daemon| -> String {
        let (_, at) = d.call(
            "POST",
            &format!("/v1/volumes/{vid}/attachments"),
            &admin,
            None,
        );
        at["uri"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{at}"))
    };
    let src = dir.path().join("src.img");
    random_file(&src, 64);
    assert!(nbdcopy(&src, &attach(&d)));
    let mut want = std::fs::read(&src).unwrap();
    // The second device is away for a start: the volume serves from the first, degraded.
    d.stop();
    let away = dir.path().join("away.img");
    std::fs::rename(&files[1], &away).unwrap();
    d = Daemon::start(&data);
    let uri = attach(&d);
    let (_, v) = d.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(v["health"], "degraded", "{v}");
    let pool = json_of(&d, &admin, &["pool", "show", "p"]);
    assert_eq!(pool["devices"][1]["health"], "missing", "{pool}");
    let o = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 10M 2M", &uri])
        .output()
        .expect("qemu-io");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    want[10 << 20..12 << 20].fill(0x5a);
    // Back: it resyncs the regions written meanwhile (2 MiB), not the volume's 64 MiB.
    d.stop();
    std::fs::rename(&away, &files[1]).unwrap();
    d = Daemon::start(&data);
    wait_healthy(&d, &admin, &vid);
    let (copied, log) = resynced_bytes(&d, &admin, &vid);
    assert!(
        (2 << 20..=4 << 20).contains(&copied),
        "copied {copied} bytes: the 2 MiB written, in whole regions: {log} {}",
        d.warnings()
    );
    // The copy that was away alone now serves the new bytes.
    d.stop();
    std::fs::rename(&files[0], &away).unwrap();
    d = Daemon::start(&data);
    let got = read_all(&attach(&d), &dir.path().join("got.img"));
    assert!(got == want, "the returned copy holds every write");
    d.stop();
}

#[test]
fn removing_a_device_drains_its_copies_under_a_running_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let devdir = dir.path().join("d/devices");
    let files: Vec<PathBuf> = (0..3).map(|i| devdir.join(format!("dev{i}.img"))).collect();
    for f in &files {
        std::fs::File::create(f)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
    }
    let mut args = vec!["pool", "create", "p"];
    for f in &files {
        args.extend(["--device", f.to_str().unwrap()]);
    }
    ok(&d, &admin, &args);
    let mk = |name: &str, replicas: u64| volume_in(&d, &admin, "p", name, "64M", replicas);
    let (one, one_uri, one_copies) = mk("one", 1);
    let (two, two_uri, two_copies) = mk("two", 2);
    let src = dir.path().join("src.img");
    random_file(&src, 32);
    assert!(nbdcopy(&src, &two_uri));
    // The device to remove holds the one-copy volume (and maybe a copy of the other).
    let gone = one_copies[0].clone();
    // A client keeps writing and verifying the one-copy volume's last 16 MiB through the drain.
    let uri = one_uri.clone();
    let client = std::thread::spawn(move || {
        crate::qos::fio(
            &uri,
            &[
                "--rw=randwrite",
                "--bs=4k",
                "--offset=48M",
                "--size=16M",
                "--rate=8m",
                "--loops=3",
                "--verify=crc32c",
                "--do_verify=1",
                "--iodepth=4",
            ],
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let shown = ok(&d, &admin, &["pool", "remove-device", "p", &gone]);
    assert!(!shown.contains(&format!("{gone} ")), "{shown}");
    let r = client.join().unwrap();
    assert_eq!(r["jobs"][0]["error"], 0, "{r}");
    // Nothing is left on the device, which left the pool; the bytes are where they were.
    let pool = json_of(&d, &admin, &["pool", "show", "p"]);
    assert!(
        pool["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != gone.as_str()),
        "{pool}"
    );
    for (id, was) in [(&one, &one_copies), (&two, &two_copies)] {
        let (_, v) = d.call("GET", &format!("/v1/volumes/{id}"), &admin, None);
        let now: Vec<&str> = v["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(now.len(), was.len(), "{v}");
        assert!(!now.contains(&gone.as_str()), "{v}");
        assert_eq!(v["health"], "healthy", "{v}");
    }
    assert_same(&src, &two_uri);
    let (_, log) = d.call("GET", "/v1/audit?limit=100", &admin, None);
    for action in ["volume.moved", "device.removed"] {
        assert!(
            log["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action} in {log}"
        );
    }
    // A volume with snapshots moves too: its new copy is given the snapshot first, and the
    // snapshot and the live data read the same after the move.
    let extra = devdir.join("dev3.img");
    std::fs::File::create(&extra)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    ok(
        &d,
        &admin,
        &["pool", "add-device", "p", extra.to_str().unwrap()],
    );
    let (snapped, snapped_uri, sc) = mk("snapped", 1);
    assert!(nbdcopy(&src, &snapped_uri));
    let (s, v) = d.call(
        "POST",
        &format!("/v1/volumes/{snapped}/snapshots"),
        &admin,
        Some(json!({"name": "s"})),
    );
    assert_eq!(s, 201, "{v}");
    let at_snapshot = dir.path().join("at_snapshot.img");
    std::fs::write(
        &at_snapshot,
        read_all(&snapped_uri, &dir.path().join("t.img")),
    )
    .unwrap();
    qemu_io(
        &snapped_uri,
        &["write -P 0x5a 40M 8M", "discard 0 4M", "flush"],
    );
    let live = dir.path().join("live.img");
    std::fs::write(&live, read_all(&snapped_uri, &dir.path().join("t.img"))).unwrap();
    assert!(
        std::fs::read(&live).unwrap() != std::fs::read(&at_snapshot).unwrap(),
        "the live data differs from the snapshot"
    );
    let shown = ok(&d, &admin, &["pool", "remove-device", "p", &sc[0]]);
    assert!(!shown.contains(&format!("{} ", sc[0])), "{shown}");
    let pool = json_of(&d, &admin, &["pool", "show", "p"]);
    assert!(
        pool["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != sc[0].as_str()),
        "the device left: {pool}"
    );
    let (_, v) = d.call("GET", &format!("/v1/volumes/{snapped}"), &admin, None);
    assert!(
        v["copies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c != sc[0].as_str()),
        "{v}"
    );
    assert_same(&live, &snapped_uri);
    let snap_uri = ok(&d, &admin, &["volume", "attach", "snapped@s"]);
    assert_same(&at_snapshot, snap_uri.trim());
    // The two active devices now hold the 2-copy volume: neither may leave (no third domain).
    let other = pool["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["copies"].as_u64() > Some(0))
        .map(|x| x["id"].as_str().unwrap().to_string());
    if let Some(other) = other {
        let (s, v) = d.call(
            "DELETE",
            &format!("/v1/pools/p/devices/{other}"),
            &admin,
            None,
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (409, Some("device_in_use")),
            "{v}"
        );
    }
    d.stop();
}
