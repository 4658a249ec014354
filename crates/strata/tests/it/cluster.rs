//! Several daemons on one etcd (`docs/cluster.md`): each keeps to its own node's pools,
//! devices and volumes; each holds a lease, shows `down` on the others once it is gone, and
//! one of them leads.
//!
//! The etcd cluster is the state store tests' helper (real members on loopback, killed on
//! drop). Skipped, with `SKIPPED: etcd not installed`, only where no etcd binary exists
//! (`scripts/test` installs it and fails without it).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

#[allow(dead_code)]
#[path = "../../../strata-state/tests/it/etcd_cluster.rs"]
pub(crate) mod etcd_cluster;

use etcd_cluster::EtcdCluster;

/// The `--store` URL of every member.
pub(crate) fn store_url(etcd: &EtcdCluster) -> String {
    format!("etcd://{}", etcd.endpoints().join(","))
}

/// A daemon of node `node` on `url`, its data dir under `root`.
fn node(root: &Path, node: &str, url: &str) -> Daemon {
    Daemon::start_with(&root.join(node), &["--store", url, "--node", node])
}

/// Two daemons, `n1` and `n2`, on a one-member etcd; the cluster's admin token. None where
/// etcd is not installed.
fn two_nodes() -> Option<(EtcdCluster, tempfile::TempDir, Daemon, Daemon, String)> {
    let etcd = EtcdCluster::start(1)?;
    let url = store_url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "n1", &url);
    let b = node(dir.path(), "n2", &url);
    let admin = a.admin();
    Some((etcd, dir, a, b, admin))
}

/// A file device of `mib` MiB in the daemon's `devices/`.
pub(crate) fn device_file(d: &Daemon, name: &str, mib: u64) -> String {
    let dir = d.data.join("devices");
    let f = dir.join(name);
    std::fs::File::create(&f)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    f.to_str().unwrap().to_string()
}

pub(crate) fn post(d: &Daemon, token: &str, path: &str, body: Value) -> Value {
    let (s, v) = d.call("POST", path, token, Some(body));
    assert!(s == 200 || s == 201, "POST {path}: {s} {v}");
    v
}

#[test]
fn two_daemons_on_one_etcd_keep_to_their_own_devices() {
    // Tokens are cluster-wide: the first start's admin token works on every node.
    let Some((etcd, dir, a, b, admin)) = two_nodes() else {
        return;
    };
    let url = store_url(&etcd);
    assert!(
        !b.data.join("admin.token").exists(),
        "one bootstrap per cluster"
    );
    post(&a, &admin, "/v1/tenants", json!({"name": "ml"}));
    // Each node makes a pool of its own files, with the same name and the same device ids.
    for d in [&a, &b] {
        let (f0, f1) = (device_file(d, "f0.img", 256), device_file(d, "f1.img", 256));
        let v = post(
            d,
            &admin,
            "/v1/pools",
            json!({"name": "fast", "devices": [{"path": f0}, {"path": f1}], "replicas": 2}),
        );
        assert_eq!(v["devices"][0]["id"], "fast-d0", "{v}");
    }
    let va = post(
        &a,
        &admin,
        "/v1/volumes",
        json!({"name": "on-a", "size": "32M", "pool": "fast", "tenant": "ml"}),
    );
    let vb = post(
        &b,
        &admin,
        "/v1/volumes",
        json!({"name": "on-b", "size": "16M", "pool": "fast", "tenant": "ml"}),
    );
    // Each node's pools show its own devices and copies only.
    for (d, own, size) in [(&a, "n1", 32u64 << 20), (&b, "n2", 16 << 20)] {
        let (_, p) = d.call("GET", "/v1/pools/fast", &admin, None);
        assert_eq!(p["provisioned"], json!(2 * size), "{own}: {p}");
        let copies: Vec<u64> = p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["copies"].as_u64().unwrap())
            .collect();
        assert_eq!(copies, vec![1, 1], "{own}: {p}");
        assert!(
            p["devices"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with(d.data.to_str().unwrap()),
            "{own}: {p}"
        );
    }
    // Volumes are cluster-wide: both list both; only the owner changes one.
    let (_, l) = a.call("GET", "/v1/volumes?tenant=ml", &admin, None);
    assert_eq!(l["items"].as_array().unwrap().len(), 2, "{l}");
    let vid_b = vb["id"].as_str().unwrap();
    let (s, v) = a.call("DELETE", &format!("/v1/volumes/{vid_b}"), &admin, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_on_other_node")),
        "{v}"
    );
    let (s, v) = a.call(
        "POST",
        &format!("/v1/volumes/{vid_b}/attachments"),
        &admin,
        None,
    );
    assert!(s >= 400, "{s} {v}");
    // Restarts run recovery, the orphan sweep, rebuild and drain scans: nothing moves.
    a.stop();
    b.stop();
    let a = node(dir.path(), "n1", &url);
    let b = node(dir.path(), "n2", &url);
    for (d, mine) in [(&a, &va), (&b, &vb)] {
        let (_, v) = d.call(
            "GET",
            &format!("/v1/volumes/{}", mine["id"].as_str().unwrap()),
            &admin,
            None,
        );
        assert_eq!(v["state"], "available", "{v}");
        assert_eq!(v["copies"], mine["copies"], "{v}");
    }
    let (_, p) = b.call("GET", "/v1/pools/fast", &admin, None);
    assert_eq!(p["provisioned"], json!(32u64 << 20), "{p}");
    // The owner deletes its volume; the other's stays.
    let (s, v) = b.call("DELETE", &format!("/v1/volumes/{vid_b}"), &admin, None);
    assert!(s < 300, "{s} {v}");
    let (s, _) = a.call(
        "GET",
        &format!("/v1/volumes/{}", va["id"].as_str().unwrap()),
        &admin,
        None,
    );
    assert_eq!(s, 200);
    // Both nodes are nodes; their pools are not.
    let (_, n) = a.call("GET", "/v1/nodes", &admin, None);
    let names: Vec<&str> = n["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["n1", "n2"], "{n}");
    a.stop();
    b.stop();
}

/// `(name, state, leader)` of every node, as `node`'s API answers.
fn node_states(d: &Daemon, admin: &str) -> Vec<(String, String, bool)> {
    let (s, v) = d.call("GET", "/v1/nodes", admin, None);
    assert_eq!(s, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["leader"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Polls `f` every 200 ms until it answers `Some`, for at most `limit`; the answer and the
/// time it took.
pub(crate) fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(x) = f() {
            return (x, t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The leader, once every node of `names` is up and exactly one leads.
fn settled(d: &Daemon, admin: &str, names: &[&str]) -> Option<String> {
    let st = node_states(d, admin);
    let up = names
        .iter()
        .all(|n| st.iter().any(|(m, s, _)| m == n && s == "up"));
    let leaders: Vec<&String> = st.iter().filter(|x| x.2).map(|x| &x.0).collect();
    (up && leaders.len() == 1).then(|| leaders[0].clone())
}

/// What a killed node's lease may take to end, plus the renewal period and polling slack.
const DOWN_WITHIN: Duration = Duration::from_secs(6 + 2 + 4);

#[test]
fn a_killed_node_goes_down_and_a_killed_leader_is_replaced() {
    let Some(mut etcd) = EtcdCluster::start(3) else {
        return;
    };
    let url = store_url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let names = ["n1", "n2", "n3"];
    let mut daemons: Vec<Option<Daemon>> = names
        .iter()
        .map(|n| Some(node(dir.path(), n, &url)))
        .collect();
    let admin = daemons[0].as_ref().unwrap().admin();
    let d0 = |ds: &Vec<Option<Daemon>>, not: &str| -> usize {
        (0..3)
            .find(|&i| ds[i].is_some() && names[i] != not)
            .unwrap()
    };
    let (leader, _) = wait_for(
        Duration::from_secs(15),
        "three nodes up, one leader",
        || settled(daemons[0].as_ref().unwrap(), &admin, &names),
    );
    // Every node answers the same.
    for d in daemons.iter().flatten() {
        assert_eq!(settled(d, &admin, &names).as_deref(), Some(leader.as_str()));
    }

    // kill -9 a node that does not lead: down on the others within the lease's TTL.
    let victim = (0..3).find(|&i| names[i] != leader).unwrap();
    daemons[victim].take().unwrap().kill9();
    let watcher = d0(&daemons, names[victim]);
    let (_, took) = wait_for(DOWN_WITHIN, "the killed node shows down", || {
        let st = node_states(daemons[watcher].as_ref().unwrap(), &admin);
        st.iter()
            .any(|(n, s, _)| n == names[victim] && s == "down")
            .then_some(())
    });
    eprintln!("{} down after {took:?}", names[victim]);
    // /metrics says so too (the alive key, not the registration's age); the watcher is up.
    let m = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {admin}")])
        .arg(format!(
            "{}/metrics",
            daemons[watcher].as_ref().unwrap().url
        ))
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&m.stdout).to_string();
    assert!(
        m.lines()
            .any(|l| l == format!("strata_node_up{{node=\"{}\"}} 0", names[victim])),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l == format!("strata_node_up{{node=\"{}\"}} 1", names[watcher])),
        "{m}"
    );
    // The leader recorded it.
    let li = names.iter().position(|n| *n == leader).unwrap();
    wait_for(Duration::from_secs(5), "node.down event", || {
        let (_, ev) =
            daemons[li]
                .as_ref()
                .unwrap()
                .call("GET", "/v1/events?limit=100", &admin, None);
        ev["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "node.down" && e["object"] == names[victim])
            .then_some(())
    });

    // kill -9 the leader: the last node takes over.
    daemons[li].take().unwrap().kill9();
    let last = d0(&daemons, &leader);
    let (_, took) = wait_for(DOWN_WITHIN, "a new leader", || {
        let st = node_states(daemons[last].as_ref().unwrap(), &admin);
        st.iter()
            .any(|(n, s, l)| n == names[last] && s == "up" && *l)
            .then_some(())
    });
    eprintln!("{} leads after {took:?}", names[last]);

    // One etcd member stops: the node keeps its lease and its API writes.
    etcd.kill(0);
    let d = daemons[last].as_ref().unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        let st = node_states(d, &admin);
        assert!(
            st.iter()
                .any(|(n, s, l)| n == names[last] && s == "up" && *l),
            "{st:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    post(d, &admin, "/v1/tenants", json!({"name": "after"}));
    daemons[last].take().unwrap().stop();
}

#[test]
fn on_the_embedded_store_the_local_node_is_up_and_leads() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&dir.path().join("d"), &["--node", "solo"]);
    let st = node_states(&d, &d.admin());
    assert_eq!(st, vec![("solo".to_string(), "up".to_string(), true)]);
    // The data dir keeps its node: another name is refused, nothing changes.
    d.stop();
    let o = strata()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node",
            "other",
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid_argument") && err.contains("solo"),
        "{err}"
    );
}

/// A free TCP port on loopback (bound, then let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `provisioned` of pool `fast` as node `d` answers.
pub(crate) fn provisioned(d: &Daemon, admin: &str) -> u64 {
    let (_, p) = d.call("GET", "/v1/pools/fast", admin, None);
    p["provisioned"].as_u64().unwrap()
}

pub(crate) fn poll(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(limit, what, || f().then_some(()));
}

/// Three daemons with node ports on a three-member etcd (`extra`: more `serve` arguments),
/// tenant `ml`, and on each node a pool `fast` of one 256 MiB device: a loop device on n1 (so
/// that it can fail), files on the others.
pub(crate) struct CopyCluster {
    pub(crate) _etcd: EtcdCluster,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) secret: std::path::PathBuf,
    pub(crate) ports: Vec<u16>,
    pub(crate) extra: Vec<String>,
    pub(crate) ds: Vec<Option<Daemon>>,
    pub(crate) lo: crate::replicas::Loop,
    pub(crate) admin: String,
}

pub(crate) const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// Writes a join secret into `dir` (mode 0600, as `strata serve` insists) and returns its path.
pub(crate) fn join_secret(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let secret = dir.join("join.secret");
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret)
            .unwrap(),
        b"a join secret of the test cluster, 32+ bytes\n",
    )
    .unwrap();
    secret
}

impl CopyCluster {
    pub(crate) fn start(extra: &[&str]) -> Option<CopyCluster> {
        let etcd = EtcdCluster::start(3)?;
        let url = store_url(&etcd);
        let dir = tempfile::tempdir().unwrap();
        let secret = join_secret(dir.path());
        let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
        let lo = crate::replicas::Loop::new(&dir.path().join("n1.img"), 256 << 20);
        let mut c = CopyCluster {
            _etcd: etcd,
            dir,
            url,
            secret,
            ports,
            extra: extra.iter().map(|x| x.to_string()).collect(),
            ds: vec![],
            lo,
            admin: String::new(),
        };
        c.ds = (0..3).map(|i| Some(c.node(i))).collect();
        c.admin = c.d(0).admin();
        let admin = c.admin.clone();
        post(c.d(0), &admin, "/v1/tenants", json!({"name": "ml"}));
        post(
            c.d(0),
            &admin,
            "/v1/pools",
            json!({"name": "fast", "devices": [{"path": c.lo.dev}]}),
        );
        for i in 1..3 {
            let f = device_file(c.d(i), "f0.img", 256);
            post(
                c.d(i),
                &admin,
                "/v1/pools",
                json!({"name": "fast", "devices": [{"path": f}]}),
            );
        }
        Some(c)
    }

    /// Starts (or starts again) node `i`.
    pub(crate) fn node(&self, i: usize) -> Daemon {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let port = format!("127.0.0.1:{}", self.ports[i]);
        let mut args = vec![
            "--store",
            &self.url,
            "--node",
            NAMES[i],
            "--advertise",
            &port,
            "--join-secret-file",
            self.secret.to_str().unwrap(),
        ];
        args.extend(extra);
        Daemon::start_with(&self.dir.path().join(NAMES[i]), &args)
    }

    pub(crate) fn d(&self, i: usize) -> &Daemon {
        self.ds[i].as_ref().unwrap()
    }

    pub(crate) fn stop(self) {
        for d in self.ds.into_iter().flatten() {
            d.stop();
        }
    }
}

/// The node index of a remote copy id (`n2:fast-d0`).
pub(crate) fn node_of(copy: &str) -> usize {
    let n = copy.split_once(':').expect("a copy on another node").0;
    NAMES.iter().position(|x| *x == n).unwrap()
}

pub(crate) fn volume_copies(v: &Value) -> Vec<String> {
    serde_json::from_value(v["copies"].clone()).unwrap()
}

#[test]
fn a_replicated_volume_keeps_its_second_copy_on_another_node() {
    use crate::replicas::{assert_same, nbdcopy, random_file, read_all, wait_healthy};
    let Some(mut c) = CopyCluster::start(&[]) else {
        return;
    };
    let names = NAMES;
    let admin = c.admin.clone();
    let dir = c.dir.path().to_path_buf();
    let d1 = &c.ds[0].take().unwrap();
    let mut ds = std::mem::take(&mut c.ds);
    let lo = &c.lo;

    // Two copies with one device here: the second on another node, made by its agent.
    let body = |name: &str| json!({"name": name, "size": "64M", "pool": "fast", "tenant": "ml", "replicas": 2});
    let scratch = post(d1, &admin, "/v1/volumes", body("scratch"));
    let copies: Vec<String> = serde_json::from_value(scratch["copies"].clone()).unwrap();
    assert_eq!(copies[0], "fast-d0", "{scratch}");
    let (peer, dev) = copies[1].split_once(':').expect("a copy on another node");
    assert!(peer == "n2" || peer == "n3", "{scratch}");
    assert_eq!(dev, "fast-d0", "{scratch}");
    let pi = names.iter().position(|n| *n == peer).unwrap();
    assert_eq!(provisioned(ds[pi].as_ref().unwrap(), &admin), 64 << 20);
    // Deleted: its node removes the copy.
    let sid = scratch["id"].as_str().unwrap();
    let (s, v) = d1.call("DELETE", &format!("/v1/volumes/{sid}"), &admin, None);
    assert!(s < 300, "{s} {v}");
    poll(Duration::from_secs(10), "the remote copy removed", || {
        provisioned(ds[pi].as_ref().unwrap(), &admin) == 0
    });

    // A volume written whole through NBD: both copies take every write.
    let (vid, uri) = crate::qos::attached(d1, &admin, body("ckpt"));
    let (_, v) = d1.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    let copies: Vec<String> = serde_json::from_value(v["copies"].clone()).unwrap();
    let peer = copies[1].split_once(':').unwrap().0.to_string();
    let pi = names.iter().position(|n| *n == peer).unwrap();
    assert_eq!(
        (v["health"].as_str(), v["healthy_copies"].as_u64()),
        (Some("healthy"), Some(2)),
        "{v}"
    );
    let src = dir.join("src.img");
    random_file(&src, 64);
    assert!(nbdcopy(&src, &uri));
    assert_same(&src, &uri);
    let (_, p) = ds[pi]
        .as_ref()
        .unwrap()
        .call("GET", "/v1/pools/fast", &admin, None);
    assert!(
        p["allocated"].as_u64().unwrap() >= 64 << 20,
        "the peer has the bytes: {p}"
    );
    // A layer change would have to reach every node: refused with its code, nothing changes.
    let (s, e) = d1.call(
        "POST",
        &format!("/v1/volumes/{vid}/snapshots"),
        &admin,
        Some(json!({"name": "s1"})),
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("volume_spans_nodes")),
        "{e}"
    );
    let (_, l) = d1.call("GET", &format!("/v1/volumes/{vid}/snapshots"), &admin, None);
    assert_eq!(l["items"].as_array().map(Vec::len), Some(0), "{l}");

    // kill -9 the peer under fio with verification: the client sees no error, the volume
    // goes on degraded.
    let fio_uri = uri.clone();
    let fio = std::thread::spawn(move || {
        crate::qos::fio(
            &fio_uri,
            &[
                "--rw=randwrite",
                "--bs=64k",
                "--offset=48M",
                "--size=16M",
                "--verify=crc32c",
                "--do_verify=1",
                "--iodepth=8",
                "--loops=400",
                "--runtime=8",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    if fio.is_finished() {
        panic!(
            "fio ended before the peer died: {:?}",
            fio.join().map(|r| r["jobs"][0]["error"].clone())
        );
    }
    ds[pi].take().unwrap().kill9();
    let r = fio.join().expect("fio: no error, every block verified");
    assert_eq!(r["jobs"][0]["error"], 0, "{r}");
    let (_, v) = d1.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(
        (v["health"].as_str(), v["healthy_copies"].as_u64()),
        (Some("degraded"), Some(1)),
        "{v}"
    );
    let written = read_all(&uri, &dir.join("w1.img"));
    assert!(written[..48 << 20] == std::fs::read(&src).unwrap()[..48 << 20]);

    // The peer comes back: its copy is reattached and resynced by itself.
    ds[pi] = Some(c.node(pi));
    let v = wait_healthy(d1, &admin, &vid);
    assert_eq!(v["healthy_copies"], 2, "{v}");
    // This node's device fails: every read now comes from the peer, and gives what was
    // written, the writes it missed while it was down included.
    lo.fail();
    let again = read_all(&uri, &dir.join("w2.img"));
    assert!(again == written, "the peer's copy holds every byte");
    let (_, v) = d1.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(v["healthy_copies"], 1, "{v}");
    for d in ds.into_iter().flatten() {
        d.stop();
    }
}

#[test]
fn serve_refuses_a_readable_join_secret_and_an_unspecified_advertise_address() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("join.secret");
    std::fs::write(&secret, "a join secret of the test cluster, 32+ bytes").unwrap();
    // The store is not reached: the arguments are refused first (nothing listens on port 1).
    let serve = |advertise: &str, store: &[&str]| {
        let data = dir.path().join("d");
        let o = strata()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(store)
            .args(["--advertise", advertise, "--join-secret-file"])
            .arg(&secret)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(!data.exists(), "nothing was created");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let etcd = ["--store", "etcd://127.0.0.1:1"];
    let err = serve("127.0.0.1:10810", &etcd);
    assert!(
        err.contains("invalid_argument") && err.contains("0644"),
        "{err}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = serve("0.0.0.0", &etcd);
    assert!(
        err.contains("invalid_argument") && err.contains("unspecified"),
        "{err}"
    );
    // Without a cluster store there are no other nodes to hold copies.
    let err = serve("127.0.0.1:10810", &[]);
    assert!(
        err.contains("invalid_argument") && err.contains("--store"),
        "{err}"
    );
}

#[test]
fn a_remote_copy_faulted_past_rebuild_after_is_rebuilt_on_a_third_node() {
    use crate::replicas::{nbdcopy, random_file, read_all, wait_healthy};
    let Some(mut c) = CopyCluster::start(&["--rebuild-after", "2s"]) else {
        return;
    };
    let admin = c.admin.clone();
    let (vid, uri) = crate::qos::attached(
        c.d(0),
        &admin,
        json!({"name": "ckpt", "size": "64M", "pool": "fast", "tenant": "ml", "replicas": 2}),
    );
    let (_, v) = c
        .d(0)
        .call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    let copies = volume_copies(&v);
    let peer = node_of(&copies[1]);
    let third = 3 - peer;
    let src = c.dir.path().join("src.img");
    random_file(&src, 64);
    assert!(nbdcopy(&src, &uri));
    // The peer dies; the next writes fault its copy and the volume goes on degraded.
    c.ds[peer].take().unwrap().kill9();
    assert!(nbdcopy(&src, &uri), "the client saw no error");
    let (_, v) = c
        .d(0)
        .call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(v["health"], "degraded", "{v}");
    // Two seconds later a new copy on the third node, rebuilt whole by itself.
    let v = wait_healthy(c.d(0), &admin, &vid);
    let now = volume_copies(&v);
    assert_eq!(now[0], copies[0], "{v}");
    assert_eq!(now[1], format!("{}:fast-d0", NAMES[third]), "{v}");
    assert_eq!(provisioned(c.d(third), &admin), 64 << 20);
    let (_, audit) = c.d(0).call("GET", "/v1/audit?limit=100", &admin, None);
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "volume.rebuild" && e["resource"] == vid.as_str()),
        "{audit}"
    );
    // Every byte is on the new copy: with this node's device failed, reads come from it.
    c.lo.fail();
    let back = read_all(&uri, &c.dir.path().join("back.img"));
    assert!(
        back == std::fs::read(&src).unwrap(),
        "the new copy holds every byte"
    );
    // The old peer comes back: no record names its copy any more, and its agent removes it.
    c.ds[peer] = Some(c.node(peer));
    poll(Duration::from_secs(10), "the old copy removed", || {
        provisioned(c.d(peer), &admin) == 0
    });
    c.stop();
}

/// Two daemons on one etcd append to one event journal: every event has its own number (the
/// numbers of both nodes' `node.up` once collided), each node lists the other's events, and
/// a follower on one node is given an event that happened on the other.
#[test]
fn two_nodes_share_one_event_journal_with_distinct_numbers() {
    let Some(etcd) = EtcdCluster::start(1) else {
        return;
    };
    let url = store_url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "n1", &url);
    let b = node(dir.path(), "n2", &url);
    let admin = a.admin();
    let listed = |d: &Daemon| -> Vec<Value> {
        let (s, v) = d.call("GET", "/v1/events?limit=1000", &admin, None);
        assert_eq!(s, 200, "{v}");
        v["items"].as_array().unwrap().clone()
    };
    for d in [&a, &b] {
        let items = listed(d);
        let mut seqs: Vec<u64> = items.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "numbers repeat: {items:?}");
        for name in ["n1", "n2"] {
            assert!(
                items
                    .iter()
                    .any(|e| e["type"] == "node.up" && e["object"] == name),
                "{name}'s node.up missing: {items:?}"
            );
        }
    }
    // A follower on n1 is given a refusal that happens on n2.
    let (_, v) = a.call("GET", "/v1/events?limit=1", &admin, None);
    let cursor = v["cursor"].as_u64().unwrap();
    std::thread::scope(|sc| {
        let follower = sc.spawn(|| {
            a.call(
                "GET",
                &format!("/v1/events?after={cursor}&wait=5"),
                &admin,
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        post(
            &b,
            &admin,
            "/v1/tenants",
            json!({"name": "t", "quota": {"volumes": 0}}),
        );
        let (s, v) = b.call(
            "POST",
            "/v1/volumes",
            &admin,
            Some(json!({"name": "x", "size": "1M", "tenant": "t"})),
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (409, Some("quota_exceeded")),
            "{v}"
        );
        let t0 = Instant::now();
        let (s, v) = follower.join().unwrap();
        assert_eq!(s, 200, "{v}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let got = v["items"].as_array().unwrap();
        assert!(
            got.iter().any(|e| e["type"] == "tenant.quota_refused"),
            "{v}"
        );
    });
    // And the numbers both nodes list agree.
    let on_a: Vec<Value> = listed(&a).iter().map(|e| e["seq"].clone()).collect();
    let on_b: Vec<Value> = listed(&b).iter().map(|e| e["seq"].clone()).collect();
    assert_eq!(on_a, on_b);
    a.stop();
    b.stop();
}

/// On two nodes of one etcd, each job's slice port is made on the node its part runs on,
/// whichever node's API took the job: that node's agent opens the TAP, and deleting the job
/// closes it there.
#[test]
fn a_job_s_port_is_made_on_the_node_its_part_runs_on() {
    let Some((_etcd, _dir, a, b, admin)) = two_nodes() else {
        return;
    };
    post(&a, &admin, "/v1/tenants", json!({"name": "acme"}));
    let acme = crate::jobs::token(&a, "acme", "member");
    post(
        &a,
        &acme,
        "/v1/networks",
        json!({"name": "vpc", "cidr": "10.78.0.0/16"}),
    );
    post(
        &a,
        &acme,
        "/v1/networks/vpc/subnets",
        json!({"name": "web", "cidr": "10.78.1.0/24"}),
    );
    // Each job takes every core of a node: the two land on different nodes.
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut seen = Vec::new();
    for name in ["j1", "j2"] {
        let j = post(
            &a,
            &acme,
            "/v1/jobs",
            json!({"name": name, "cpu_cores": cores, "memory_bytes": 64u64 << 20, "network": "vpc"}),
        );
        assert_eq!(j["state"], "running", "{j}");
        let part_node = j["placement"][0]["node"].as_str().unwrap().to_string();
        let port = &j["slice"]["ports"][0];
        let (s, p) = a.call(
            "GET",
            &format!("/v1/network-ports/{}", port["id"].as_str().unwrap()),
            &acme,
            None,
        );
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["node"], part_node.as_str(), "{p} {j}");
        let dev = p["device"].as_str().unwrap().to_string();
        poll(
            Duration::from_secs(10),
            "the part's node opens the TAP",
            || std::path::Path::new("/sys/class/net").join(&dev).exists(),
        );
        seen.push((name, part_node, dev));
    }
    let nodes: std::collections::BTreeSet<&str> = seen.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(nodes.len(), 2, "{seen:?}");
    // Deleted through the other node's API: each TAP is closed on its own node.
    for (name, _, dev) in &seen {
        let (s, v) = b.call("DELETE", &format!("/v1/jobs/{name}"), &acme, None);
        assert_eq!(s, 204, "{v}");
        poll(Duration::from_secs(10), "the TAP is closed", || {
            !std::path::Path::new("/sys/class/net").join(dev).exists()
        });
    }
    a.stop();
    b.stop();
}
