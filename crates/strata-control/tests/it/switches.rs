//! Switches on the controller over a real redb store (shared with the test, which reads the
//! keys and can make writes fail), with real dataplanes without ports (no root needed): the
//! store's layout and size as the table grows, restart, migration of the old format,
//! concurrent flow adds, a failed store write, and clipped error messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_control::{api, Controller, Principal};
use strata_state::{KeyValue, RedbStore, Store, StoreError, Txn, TxnResult};
use strata_types::DeviceClass;

/// The real store, shared with the test; `fail` makes every write fail.
#[derive(Clone)]
struct Shared {
    inner: Arc<RedbStore>,
    fail: Arc<AtomicBool>,
}

impl Store for Shared {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key)
    }
    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        self.inner.range(prefix, after, limit)
    }
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected write failure".into()));
        }
        self.inner.txn(txn)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
    fn changes(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<strata_state::Event>, StoreError> {
        self.inner.changes(prefix, after, limit)
    }
    fn wait(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        self.inner.wait(after, timeout)
    }
}

/// A store file and a memory pool that outlive controllers: [`Node::open`] is a daemon start.
struct Node {
    store: Shared,
    dev: Arc<MemDevice>,
    secret: String,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        // On tmpfs when there is one: the test measures the file, not the disk's fsync.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let path = dir.path().join("state.redb");
        let dev = MemDevice::new(64 << 20, "m");
        drop(
            Pool::create(vec![DeviceSpec {
                device: dev.clone(),
                class: DeviceClass::Ssd,
            }])
            .unwrap(),
        );
        let store = Shared {
            inner: Arc::new(RedbStore::open(&path).unwrap()),
            fail: Arc::new(AtomicBool::new(false)),
        };
        let mut n = Node {
            store,
            dev,
            secret: String::new(),
            path,
            _dir: dir,
        };
        let (c, _) = n.open();
        n.secret = c.bootstrap_admin().unwrap().unwrap();
        n
    }

    /// A controller over the node's store and pool (a daemon start: restores the switches).
    fn open(&self) -> (Controller, Option<Principal>) {
        let pool = Pool::open(vec![self.dev.clone() as Arc<dyn BlockDevice>]).unwrap();
        let c = Controller::open(Box::new(self.store.clone()), pool).unwrap();
        let admin = c.authenticate(&self.secret).ok();
        (c, admin)
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let (kvs, _) = self.store.range(prefix, None, 0).unwrap();
        kvs.into_iter().map(|kv| kv.key).collect()
    }
}

/// `dump-flows` without what changes with time and traffic (duration, counters).
fn rules(dump: &str) -> Vec<String> {
    dump.lines()
        .map(|l| {
            l.split(", ")
                .filter(|f| {
                    !f.trim_start().starts_with("duration=")
                        && !f.starts_with("n_packets=")
                        && !f.starts_with("n_bytes=")
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

fn flow(i: usize) -> String {
    format!(
        "table=0,priority=10,ip,nw_dst=10.{}.{}.{}/32,actions=drop",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

/// 20,000 flows: each add writes one key (the file stays far under 50 MB and add latency does
/// not grow with the table), and a restart restores exactly the same rules.
#[test]
fn twenty_thousand_flows_stay_small_and_restore_the_same_table() {
    let n = Node::new();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    c.create_switch(&admin, "big").unwrap();
    let mut per_thousand = Vec::new();
    let mut t = Instant::now();
    for i in 0..20_000 {
        c.add_switch_flow(&admin, "big", &flow(i)).unwrap();
        if (i + 1) % 1000 == 0 {
            per_thousand.push(t.elapsed() / 1000);
            t = Instant::now();
        }
    }
    // A second add of the same match and priority replaces the first: still one key for it.
    c.add_switch_flow(
        &admin,
        "big",
        "table=0,priority=10,ip,nw_dst=10.0.0.0/32,actions=normal",
    )
    .unwrap();
    let size = std::fs::metadata(&n.path).unwrap().len();
    eprintln!(
        "state.redb after 20,000 flows: {:.1} MiB; mean add per thousand: first {:?}, last {:?}",
        size as f64 / (1 << 20) as f64,
        per_thousand[0],
        per_thousand[19]
    );
    assert!(size < 50_000_000, "state.redb is {size} bytes");
    assert!(
        per_thousand[19] < per_thousand[0] * 3 + Duration::from_millis(1),
        "adds slow down as the table grows: {per_thousand:?}"
    );
    assert_eq!(
        n.keys("/switches/big/flows/").len(),
        20_001,
        "default flow + 20,000"
    );
    assert_eq!(n.keys("/switches/big/ports/").len(), 0);
    let before = rules(&c.dump_switch_flows(&admin, "big").unwrap());
    assert_eq!(before.len(), 20_001);
    assert!(before
        .iter()
        .any(|r| r.contains("nw_dst=10.0.0.0") && r.contains("actions=normal")));
    assert_eq!(c.get_switch(&admin, "big").unwrap().flows.len(), 20_001);
    c.shutdown();
    drop(c);
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    let after = rules(&c.dump_switch_flows(&admin, "big").unwrap());
    assert_eq!(after, before, "restart must restore the same table");
    // Ids are stable across the restart: a new flow takes a new key after the others.
    c.add_switch_flow(&admin, "big", "table=2,priority=1,actions=drop")
        .unwrap();
    let keys = n.keys("/switches/big/flows/");
    assert_eq!(keys.len(), 20_002);
    assert!(
        keys.last().unwrap().ends_with(&format!("{:020}", 20_003)),
        "{:?}",
        keys.last()
    );
    c.shutdown();
}

/// The layout: the switch record holds only its own fields; ports and flows have their own
/// keys; deleting flows and ports deletes their keys; deleting the switch deletes them all.
#[test]
fn each_port_and_flow_has_its_own_key() {
    let n = Node::new();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    c.create_switch(&admin, "s1").unwrap();
    c.create_switch(&admin, "s1-b").unwrap();
    for p in ["zz", "aa"] {
        let port = strata_control::net::PortRecord {
            name: format!("ssk{}{p}", std::process::id() % 10_000),
            kind: Some("internal".into()),
            ..Default::default()
        };
        c.add_switch_port(&admin, "s1", port).unwrap();
    }
    c.add_switch_flow(&admin, "s1", "priority=5,ip,actions=drop")
        .unwrap();
    c.add_switch_flow(&admin, "s1", "priority=6,arp,actions=normal")
        .unwrap();
    let rec = n.store.get("/switches/s1").unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "only name and created: {v}"
    );
    assert_eq!(n.keys("/switches/s1/ports/").len(), 2);
    assert_eq!(n.keys("/switches/s1/flows/").len(), 3);
    // Ports keep their add order (and so their numbers) in the view and across a restart.
    let s = c.get_switch(&admin, "s1").unwrap();
    assert!(s.ports[0].name.ends_with("zz") && s.ports[1].name.ends_with("aa"));
    assert_eq!(s.flows.len(), 3);
    let list = c.list_switches(&admin).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].flows.len(), list[1].flows.len()),
        (3, 1),
        "{list:?}"
    );
    assert_eq!(c.del_switch_flows(&admin, "s1", "ip", false).unwrap(), 1);
    assert_eq!(n.keys("/switches/s1/flows/").len(), 2);
    let port = s.ports[0].name.clone();
    c.remove_switch_port(&admin, "s1", &port).unwrap();
    assert_eq!(n.keys("/switches/s1/ports/").len(), 1);
    c.shutdown();
    drop(c);
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    let s = c.get_switch(&admin, "s1").unwrap();
    assert_eq!(s.ports.len(), 1);
    assert_eq!(rules(&c.dump_switch_flows(&admin, "s1").unwrap()).len(), 2);
    c.delete_switch(&admin, "s1").unwrap();
    assert_eq!(
        n.keys("/switches/s1"),
        vec!["/switches/s1-b".to_string()]
            .into_iter()
            .chain(n.keys("/switches/s1-b/"))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.list_switches(&admin).unwrap().len(), 1);
    c.shutdown();
}

/// A switch stored in the old format (ports and flows inside its record) is rewritten at
/// start into one key per flow, in one transaction, and runs the same table.
#[test]
fn an_old_format_switch_record_is_migrated_at_start() {
    let n = Node::new();
    let old = serde_json::json!({
        "name": "legacy", "created": 7, "ports": [],
        "flows": [
            "priority=40000,icmp,actions=drop",
            "table=1,priority=5,ip,nw_src=10.0.0.1,actions=normal",
            "priority=0,actions=normal",
        ],
    });
    let rev0 = n.store.revision().unwrap();
    strata_state::put(
        &n.store,
        "/switches/legacy",
        &serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    // Count the revisions that touched the switch's keys: other start-up work (the bootstrap
    // token, credentials) writes elsewhere.
    let mut revs: Vec<u64> = n
        .store
        .changes("/switches/", rev0, 0)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    revs.dedup();
    assert_eq!(revs.len(), 2, "one write, then one migration transaction");
    let rec: serde_json::Value =
        serde_json::from_slice(&n.store.get("/switches/legacy").unwrap().unwrap().value).unwrap();
    assert_eq!(rec, serde_json::json!({"name": "legacy", "created": 7}));
    assert_eq!(n.keys("/switches/legacy/flows/").len(), 3);
    let dump = rules(&c.dump_switch_flows(&admin, "legacy").unwrap());
    assert_eq!(dump.len(), 3, "{dump:?}");
    assert!(dump[0].contains("priority=40000,icmp"), "{dump:?}");
    c.add_switch_flow(&admin, "legacy", "priority=1,arp,actions=normal")
        .unwrap();
    c.shutdown();
    drop(c);
    let (c, admin) = n.open();
    let again = rules(&c.dump_switch_flows(&admin.unwrap(), "legacy").unwrap());
    assert_eq!(again.len(), 4);
    c.shutdown();
}

/// 8 threads x 50 flow adds on one switch: every add succeeds, the table has all 400, the
/// store has all 400.
#[test]
fn concurrent_flow_adds_all_succeed_and_are_all_stored() {
    let n = Node::new();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    c.create_switch(&admin, "con").unwrap();
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let (c, admin) = (&c, &admin);
                s.spawn(move || {
                    (0..50)
                        .filter_map(|i| {
                            let f = format!(
                                "table=1,priority=10,ip,nw_src=10.200.{t}.{i}/32,actions=drop"
                            );
                            c.add_switch_flow(admin, "con", &f)
                                .err()
                                .map(|e| e.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    let dump = c.dump_switch_flows(&admin, "con").unwrap();
    assert_eq!(
        dump.lines()
            .filter(|l| l.contains("nw_src=10.200."))
            .count(),
        400
    );
    assert_eq!(
        n.keys("/switches/con/flows/").len(),
        401,
        "400 + the default flow"
    );
    assert_eq!(c.get_switch(&admin, "con").unwrap().flows.len(), 401);
    c.shutdown();
}

/// A store write that fails takes the dataplane change back: the caller gets an error and
/// the switch runs what the store holds.
#[test]
fn a_failed_store_write_takes_the_change_back() {
    let n = Node::new();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    c.create_switch(&admin, "f").unwrap();
    c.add_switch_flow(&admin, "f", "priority=5,ip,actions=drop")
        .unwrap();
    let before = rules(&c.dump_switch_flows(&admin, "f").unwrap());
    n.store.fail.store(true, Ordering::SeqCst);
    // A new flow, and one that would replace an existing one.
    assert!(c
        .add_switch_flow(&admin, "f", "priority=9,arp,actions=drop")
        .is_err());
    assert!(c
        .add_switch_flow(&admin, "f", "priority=5,ip,actions=normal")
        .is_err());
    assert!(c.del_switch_flows(&admin, "f", "", false).is_err());
    let port = strata_control::net::PortRecord {
        name: format!("ssf{}", std::process::id() % 100_000),
        kind: Some("internal".into()),
        ..Default::default()
    };
    assert!(c.add_switch_port(&admin, "f", port.clone()).is_err());
    assert_eq!(rules(&c.dump_switch_flows(&admin, "f").unwrap()), before);
    assert!(c.switch_ports(&admin, "f").unwrap()["items"]
        .as_array()
        .unwrap()
        .is_empty());
    n.store.fail.store(false, Ordering::SeqCst);
    // The control plane still knows which rule is which: replacing and deleting work.
    c.add_switch_flow(&admin, "f", "priority=5,ip,actions=normal")
        .unwrap();
    assert_eq!(n.keys("/switches/f/flows/").len(), 2);
    assert_eq!(c.del_switch_flows(&admin, "f", "ip", false).unwrap(), 1);
    assert_eq!(n.keys("/switches/f/flows/").len(), 1);
    c.add_switch_port(&admin, "f", port).unwrap();
    c.shutdown();
}

/// An error never echoes more than a clip of the input: a 100 KB invalid flow and a 10 KB
/// invalid name get messages under 300 bytes (with their codes unchanged).
#[test]
fn error_messages_clip_the_input() {
    let n = Node::new();
    let (c, admin) = n.open();
    let admin = admin.unwrap();
    c.create_switch(&admin, "clip").unwrap();
    let msg = |r: Result<(), strata_control::ControlError>| {
        let e = api::ApiError::from(r.unwrap_err());
        assert!(
            e.message.len() < 300,
            "{} bytes: {}…",
            e.message.len(),
            &e.message[..100]
        );
        e.code.as_str()
    };
    let big = "x".repeat(100_000);
    assert_eq!(
        msg(c.add_switch_flow(&admin, "clip", &format!("{big}=1,actions=drop"))),
        "unknown_field"
    );
    assert_eq!(
        msg(c.add_switch_flow(&admin, "clip", &format!("ip,nw_dst={big},actions=drop"))),
        "bad_value"
    );
    assert_eq!(
        msg(c.add_switch_flow(&admin, "clip", &format!("ip,actions={big}"))),
        "unknown_action"
    );
    assert_eq!(
        msg(c.add_switch_flow(&admin, "clip", &format!("ip,actions=output:{big}"))),
        "unknown_port"
    );
    assert_eq!(
        msg(c
            .del_switch_flows(&admin, "clip", &format!("{big}=1"), false)
            .map(drop)),
        "unknown_field"
    );
    assert_eq!(
        msg(c
            .trace_switch(&admin, "clip", &format!("in_port=1,{big}=2"))
            .map(drop)),
        "invalid_argument"
    );
    let name = "n".repeat(10_000);
    assert_eq!(
        msg(c.create_switch(&admin, &name).map(drop)),
        "invalid_argument"
    );
    assert_eq!(
        msg(c.get_switch(&admin, &name).map(drop)),
        "switch_not_found"
    );
    assert_eq!(
        msg(c.add_switch_flow(&admin, &name, "actions=drop")),
        "switch_not_found"
    );
    assert_eq!(
        msg(c.remove_switch_port(&admin, "clip", &name)),
        "port_not_found"
    );
    // The same for the other resources' names (clipped where not-found and exists errors
    // are built, and in the shared name check).
    c.create_tenant(&admin, "t", Default::default()).unwrap();
    let vol = c
        .create_volume(&admin, crate::fixture::new_volume("t", &name, "1M"))
        .map(drop);
    assert_eq!(msg(vol), "invalid_argument");
    assert_eq!(
        msg(c.get_tenant(&admin, &name).map(drop)),
        "tenant_not_found"
    );
    let port = strata_control::net::PortRecord {
        name: "p".into(),
        kind: Some(name.clone()),
        ..Default::default()
    };
    assert_eq!(
        msg(c.add_switch_port(&admin, "clip", port).map(drop)),
        "invalid_argument"
    );
    c.shutdown();
}
