//! Failover and fencing across nodes (`docs/cluster.md`, step 4): the node holding a copy
//! takes a volume over when its serving node is down, with every flushed write; a serving
//! node cut off by a partition acknowledges no write its peers miss, and once another node
//! took the volume over its writes are refused.
//!
//! Real daemons on a real three-member etcd, real NBD clients (nbdcopy, fio, qemu-io); the
//! partition is a veth set down between a network namespace the test makes and this one.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_nbd::client::{ClientConfig, Connection, Target};

use crate::cluster::etcd_cluster::EtcdCluster;
use crate::cluster::*;
use crate::common::*;
use crate::replicas::{nbdcopy, random_file, read_all, wait_healthy};

fn take_over(d: &Daemon, admin: &str, vid: &str) -> (u16, Value) {
    d.call("POST", &format!("/v1/volumes/{vid}/takeover"), admin, None)
}

fn attach(d: &Daemon, admin: &str, vid: &str) -> (u16, Value) {
    d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        admin,
        None,
    )
}

/// Runs qemu-io commands on the export at `uri`, at most 60 s: (whether every command
/// succeeded, what it printed).
fn qemu_io(uri: &str, cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("timeout");
    c.args(["60", "qemu-io", "-f", "raw"]);
    for x in cmds {
        c.args(["-c", x]);
    }
    let o = c
        .arg(uri)
        .output()
        .expect("qemu-io (qemu-utils) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let failed = text.contains("failed") || text.contains("error") || text.contains("Error");
    (o.status.success() && !failed, text)
}

/// Takes volume `vid` over on `d`, asking again while its serving node is still up to the
/// store (its lease has not expired yet).
fn take_over_when_down(d: &Daemon, admin: &str, vid: &str) -> Value {
    wait_for(Duration::from_secs(40), "the takeover", || {
        let (s, v) = take_over(d, admin, vid);
        if s == 409 && v["error"]["code"] == "serving_node_up" {
            return None;
        }
        assert_eq!(s, 200, "{v}");
        Some(v)
    })
    .0
}

#[test]
fn a_killed_serving_node_is_taken_over_by_a_copy_s_node_with_every_flushed_write() {
    let Some(mut c) = CopyCluster::start(&[]) else {
        return;
    };
    let admin = c.admin.clone();
    let dir = c.dir.path().to_path_buf();
    let body =
        json!({"name": "ckpt", "size": "64M", "pool": "fast", "tenant": "ml", "replicas": 2});
    let (vid, uri) = crate::qos::attached(c.d(0), &admin, body);
    let (_, v) = c
        .d(0)
        .call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(v["node"], "n1", "{v}");
    let pi = node_of(&volume_copies(&v)[1]);
    let other = 3 - pi;

    // Refused, with their codes, and nothing changes: the serving node is up; a node
    // without a copy.
    let (s, e) = take_over(c.d(pi), &admin, &vid);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("serving_node_up")),
        "{e}"
    );
    let (s, e) = take_over(c.d(other), &admin, &vid);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("no_in_sync_copy")),
        "{e}"
    );
    let (_, same) = c
        .d(0)
        .call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(
        (&same["node"], &same["copies"]),
        (&v["node"], &v["copies"]),
        "{same}"
    );

    // Every byte written and flushed: 48 MiB by nbdcopy, the last 16 by fio with
    // verification headers and a final fsync.
    let src = dir.join("src.img");
    random_file(&src, 64);
    assert!(nbdcopy(&src, &uri));
    let pattern = [
        "--rw=write",
        "--bs=64k",
        "--offset=48M",
        "--size=16M",
        "--verify=crc32c",
    ];
    let mut args = pattern.to_vec();
    args.extend(["--do_verify=0", "--end_fsync=1"]);
    let r = crate::qos::fio(&uri, &args);
    assert_eq!(r["jobs"][0]["error"], 0, "{r}");

    // kill -9 the serving node; the copy's node takes the volume over once it is down.
    let killed = Instant::now();
    c.ds[0].take().unwrap().kill9();
    let v = take_over_when_down(c.d(pi), &admin, &vid);
    assert_eq!(v["node"], NAMES[pi], "{v}");
    assert_eq!(
        volume_copies(&v),
        vec!["fast-d0".to_string(), "n1:fast-d0".to_string()],
        "{v}"
    );
    // Asked again: the same answer (idempotent on the new serving node).
    let (s, again) = take_over(c.d(pi), &admin, &vid);
    assert_eq!((s, &again["copies"]), (200, &v["copies"]), "{again}");
    let (s, a) = attach(c.d(pi), &admin, &vid);
    assert!(s == 200 || s == 201, "{a}");
    let uri2 = a["uri"].as_str().unwrap().to_string();
    assert_ne!(uri2, uri, "served from the new node's socket");
    let got = read_all(&uri2, &dir.join("after.img"));
    eprintln!(
        "failover: {:.1} s from kill -9 to the first read on the new node",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        got[..48 << 20] == std::fs::read(&src).unwrap()[..48 << 20],
        "every flushed byte is on the new node"
    );
    let mut args = pattern.to_vec();
    args.push("--verify_only");
    let r = crate::qos::fio(&uri2, &args);
    assert_eq!(r["jobs"][0]["error"], 0, "fio verifies every block: {r}");
    // Writes go on, degraded: the old node's copy is down.
    let (ok, out) = qemu_io(&uri2, &["write -P 0x6b 0 1M", "flush"]);
    assert!(ok, "{out}");
    let (_, d) = c
        .d(pi)
        .call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    assert_eq!(d["health"], "degraded", "{d}");

    // The old node comes back: it serves the volume no more, and its copy is rebuilt whole
    // from the new one.
    c.ds[0] = Some(c.node(0));
    let (s, e) = attach(c.d(0), &admin, &vid);
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("volume_on_other_node")),
        "{e}"
    );
    let v = wait_healthy(c.d(pi), &admin, &vid);
    assert_eq!(v["healthy_copies"], 2, "{v}");
    poll(
        Duration::from_secs(10),
        "the old node counts its copy",
        || provisioned(c.d(0), &admin) == 64 << 20,
    );
    c.stop();
}

/// A network namespace with one veth to this one (`10.213.7.2` inside, `10.213.7.1` here),
/// deleted on drop.
struct Island {
    ns: String,
    here: String,
}

const HERE: &str = "10.213.7.1";
const THERE: &str = "10.213.7.2";

impl Island {
    fn new() -> Island {
        let id = std::process::id() % 100_000;
        let i = Island {
            ns: format!("stfo{id}"),
            here: format!("stfo{id}a"),
        };
        let there = format!("stfo{id}b");
        let _ = Command::new("ip").args(["netns", "del", &i.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &i.here]).status();
        for args in [
            vec!["netns", "add", &i.ns],
            vec![
                "link", "add", &i.here, "type", "veth", "peer", "name", &there,
            ],
            vec!["link", "set", &there, "netns", &i.ns],
            vec!["addr", "add", "10.213.7.1/24", "dev", &i.here],
            vec!["link", "set", &i.here, "up"],
            vec!["-n", &i.ns, "addr", "add", "10.213.7.2/24", "dev", &there],
            vec!["-n", &i.ns, "link", "set", &there, "up"],
            vec!["-n", &i.ns, "link", "set", "lo", "up"],
        ] {
            let s = Command::new("ip").args(&args).status().unwrap();
            assert!(s.success(), "ip {args:?}");
        }
        i
    }

    fn link(&self, up: bool) {
        let s = Command::new("ip")
            .args(["link", "set", &self.here, if up { "up" } else { "down" }])
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Island {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.here])
            .status();
    }
}

#[test]
fn a_partitioned_serving_node_acknowledges_nothing_and_is_fenced_after_the_takeover() {
    let island = Island::new();
    let Some(etcd) = EtcdCluster::start_also_on(3, Some(HERE)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = join_secret(dir.path());
    let secret = secret.to_str().unwrap();
    let local = store_url(&etcd);
    let far = format!("etcd://{}", etcd.endpoints_on(HERE).join(","));
    // n1 in the namespace: its API, node port and store traffic all cross the veth.
    let n1_port = format!("{THERE}:{}", free_port());
    let n1_api = format!("{THERE}:0");
    let n1 = Daemon::start_in(
        &dir.path().join("n1"),
        &[
            "--listen",
            &n1_api,
            "--store",
            &far,
            "--node",
            "n1",
            "--advertise",
            &n1_port,
            "--join-secret-file",
            secret,
        ],
        Some(&island.ns),
    );
    let peers: Vec<Daemon> = ["n2", "n3"]
        .iter()
        .map(|n| {
            let port = format!("{HERE}:{}", free_port());
            Daemon::start_with(
                &dir.path().join(n),
                &[
                    "--store",
                    &local,
                    "--node",
                    n,
                    "--advertise",
                    &port,
                    "--join-secret-file",
                    secret,
                ],
            )
        })
        .collect();
    let admin = n1.admin();
    post(&n1, &admin, "/v1/tenants", json!({"name": "ml"}));
    for d in std::iter::once(&n1).chain(peers.iter()) {
        let f = device_file(d, "f0.img", 256);
        post(
            d,
            &admin,
            "/v1/pools",
            json!({"name": "fast", "devices": [{"path": f}]}),
        );
    }
    let body =
        json!({"name": "ckpt", "size": "64M", "pool": "fast", "tenant": "ml", "replicas": 2});
    let (vid, uri) = crate::qos::attached(&n1, &admin, body);
    let (_, v) = n1.call("GET", &format!("/v1/volumes/{vid}"), &admin, None);
    let peer = &peers[node_of(&volume_copies(&v)[1]) - 1];
    let src = dir.path().join("src.img");
    random_file(&src, 64);
    assert!(nbdcopy(&src, &uri), "written through n1");

    // A client connected to n1 (on its Unix socket, from this namespace) before the cut.
    let socket = uri.split_once("socket=").unwrap().1.to_string();
    let mut client = Connection::connect(
        &Target::Unix(socket.into()),
        &vid,
        &ClientConfig {
            io_timeout: Duration::from_secs(90),
            tls: None,
        },
    )
    .expect("an NBD session on n1");
    client.write_at(0, &vec![0x11; 64 << 10], false).unwrap();
    client.flush().unwrap();
    let mut flushed = std::fs::read(&src).unwrap();
    flushed[..64 << 10].fill(0x11);

    // Cut n1 off from the store and the peer. Its client writes and flushes: the write
    // reaches n1's own copy but not the peer's (the remote copy may take it behind and
    // answer), and n1 cannot record the peer's copy stale, so the flush, which waits for the
    // peer's copy, is not acknowledged.
    island.link(false);
    let cut = Instant::now();
    let r = client
        .write_at(0, &vec![0x5a; 1 << 20], false)
        .and_then(|()| client.flush());
    assert!(
        r.is_err(),
        "a partitioned node acknowledged a write its peer missed"
    );
    eprintln!(
        "partitioned write refused after {:.1} s: {:?}",
        cut.elapsed().as_secs_f64(),
        r
    );

    // The peer takes the volume over once n1's lease expired; it has every flushed byte and
    // nothing of the refused write.
    let v = take_over_when_down(peer, &admin, &vid);
    assert_eq!(volume_copies(&v)[1], "n1:fast-d0", "{v}");
    let (s, a) = attach(peer, &admin, &vid);
    assert!(s == 200 || s == 201, "{a}");
    let uri2 = a["uri"].as_str().unwrap().to_string();
    assert!(read_all(&uri2, &dir.path().join("t1.img")) == flushed);
    let (ok, out) = qemu_io(&uri2, &["write -P 0x77 1M 1M", "flush"]);
    assert!(ok, "{out}");
    let mut expect = flushed.clone();
    expect[1 << 20..2 << 20].fill(0x77);

    // The partition heals: n1's writes are refused (its set cannot publish under its old
    // generation, the peer refuses its old session, and then n1 stops serving the volume),
    // and the peer's copy keeps what the peer wrote.
    island.link(true);
    std::thread::sleep(Duration::from_secs(1));
    let r = client
        .write_at(0, &vec![0x44; 64 << 10], false)
        .and_then(|()| client.flush());
    assert!(r.is_err(), "the old session wrote after the takeover");
    for i in 0..3 {
        let (ok, out) = qemu_io(&uri, &["write -P 0x33 0 4M", "flush"]);
        assert!(!ok, "write {i} through the fenced node succeeded: {out}");
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(
        read_all(&uri2, &dir.path().join("t2.img")) == expect,
        "the fenced node changed nothing"
    );
    // n1 is back in the cluster as the holder of a copy, rebuilt whole from the new owner.
    let v = wait_healthy(peer, &admin, &vid);
    assert_eq!(v["healthy_copies"], 2, "{v}");
    assert!(read_all(&uri2, &dir.path().join("t3.img")) == expect);
    for d in peers {
        d.stop();
    }
    n1.stop();
    drop(island);
}
