//! `strata apply` and `strata get -o yaml` against a real daemon: every kind applies from
//! one file, a second apply makes no write (the audit log, which records every write, does
//! not grow), dry runs change nothing and show field diffs, one field's update changes only
//! that field, prune stays within the kinds and tenants the file names, a bad object fails
//! alone while its dependents are skipped, bad files are refused before any write, every
//! kind round-trips through `get -o yaml`, a tenant token applies only its own objects, and
//! snapshot schedules and load balancers create, stay unchanged, diff and prune like the rest.

use std::io::Write;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::common::*;

struct Cli<'a> {
    d: &'a Daemon,
    dir: &'a std::path::Path,
    token: Option<String>,
}

impl Cli<'_> {
    fn run_in(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = strata();
        c.args(args).arg("--endpoint").arg(&self.d.url);
        match &self.token {
            Some(t) => c.arg("--token").arg(t),
            None => c.arg("--data-dir").arg(&self.d.data),
        };
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let o = child.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        self.run_in(args, None)
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "strata {args:?}:\n{out}\n{err}");
        out
    }
    /// Writes `text` to NAME in the test's directory and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    fn apply(&self, text: &str, extra: &[&str]) -> (bool, String, String) {
        let f = self.file("apply.yaml", text);
        let mut a = vec!["apply", "-f", f.as_str()];
        a.extend(extra);
        self.run(&a)
    }
}

/// How many writes the daemon recorded.
fn writes(d: &Daemon) -> usize {
    let (st, v) = d.call("GET", "/v1/audit?limit=1000", &d.admin(), None);
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().unwrap().len()
}

fn volume(d: &Daemon, tenant: &str, name: &str) -> Value {
    let (st, v) = d.call(
        "GET",
        &format!("/v1/volumes?tenant={tenant}&name={name}"),
        &d.admin(),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["items"][0].clone()
}

/// A TAP name no other test's switch uses at the same time.
fn tap() -> String {
    format!("apt{}", std::process::id() % 100_000)
}

fn everything() -> String {
    let peer = format!("av{}", std::process::id() % 100_000);
    format!(
        r#"kind: tenant
name: acme
quota: {{capacity: 100G, volumes: 10, iops: 50000, networks: 4, ports: 16}}
share: {{weight: 200}}
---
kind: volume
name: db
tenant: acme
size: 1G
qos: {{iops_limit: 500, bandwidth_limit: 100M}}
---
kind: switch
name: apply-br
ports:
- {{name: {tap}, vni: 100}}
flows:
- table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:{tap}
---
kind: network
name: public
tenant: acme
cidr: 203.0.113.0/24
external: true
---
kind: subnet
name: public-sn
tenant: acme
network: public
cidr: 203.0.113.0/24
---
kind: network
name: vpc1
tenant: acme
cidr: 10.10.0.0/16
cap_bps: 1000000000
---
kind: subnet
name: web
tenant: acme
network: vpc1
cidr: 10.10.1.0/24
dns: [10.10.0.53]
---
kind: router
name: r1
tenant: acme
network: vpc1
subnets: [web]
gateway: public
---
kind: security_group
name: https
tenant: acme
rules:
- {{direction: ingress, protocol: tcp, port_min: 443, port_max: 443}}
---
kind: port
name: vm1
tenant: acme
network: vpc1
subnet: web
veth_peer: {peer}
security_groups: [https]
cap_bps: 100000000
min_bps: 10000000
---
kind: floating_ip
name: vm1
tenant: acme
network: public
---
kind: job
name: train
tenant: acme
gpus: 0
cpu_cores: 1
memory: 64M
"#,
        tap = tap(),
    )
}

const KINDS: [&str; 10] = [
    "tenant",
    "volume",
    "switch",
    "network",
    "subnet",
    "router",
    "security_group",
    "port",
    "floating_ip",
    "job",
];

#[test]
fn every_kind_applies_then_a_second_apply_writes_nothing_and_get_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let c = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let (ok, out, err) = c.apply(&everything(), &[]);
    assert!(ok, "{out}\n{err}");
    for k in KINDS {
        assert!(out.contains(&format!("created {k} ")), "{k}: {out}");
    }
    assert!(out.contains("12 created"), "{out}");
    let v = volume(&d, "acme", "db");
    assert_eq!(v["size"], 1u64 << 30);
    assert_eq!(v["qos"]["iops_limit"], 500);

    let before = writes(&d);
    let (ok, out, err) = c.apply(&everything(), &[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.trim(), "nothing to change: 12 object(s) unchanged");
    assert_eq!(writes(&d), before, "a second apply wrote");

    // Every kind, printed, is input that changes nothing.
    for k in KINDS {
        let yaml = c.ok(&["get", k, "-o", "yaml"]);
        assert!(yaml.contains(&format!("kind: {k}\n")), "{k}: {yaml}");
        let f = c.file(&format!("{k}.yaml"), &yaml);
        let (ok, out, err) = c.run(&["apply", "-f", &f]);
        assert!(ok, "{k}: {out}\n{err}\n{yaml}");
        assert!(out.starts_with("nothing to change"), "{k}: {out}\n{yaml}");
        assert_eq!(writes(&d), before, "{k} round trip wrote:\n{yaml}");
    }
    let all = c.ok(&["get", "all", "-o", "yaml"]);
    let (ok, out, err) = c.run_in(&["apply", "-f", "-"], Some(&all));
    assert!(ok, "{out}\n{err}\n{all}");
    assert!(out.starts_with("nothing to change"), "{out}\n{all}");
    assert_eq!(writes(&d), before);
    // The size is printed as it is written.
    let db = c.ok(&["get", "volume", "db", "--tenant", "acme", "-o", "yaml"]);
    assert!(db.contains("size: 1G\n"), "{db}");
}

#[test]
fn dry_run_shows_diffs_and_changes_nothing_then_one_field_changes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let c = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let base = "kind: tenant\nname: acme\n---\nkind: volume\nname: db\ntenant: acme\nsize: 1G\nqos: {iops_limit: 500, burst_iops: 900}\n";
    let (ok, out, err) = c.apply(base, &[]);
    assert!(ok, "{out}\n{err}");
    let before = writes(&d);
    let grown = base.replace("size: 1G", "size: 2G");
    let (ok, out, err) = c.apply(&grown, &["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("~ volume acme/db: size 1G -> 2G\n"), "{out}");
    assert!(out.contains("= tenant acme"), "{out}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    let (ok, out, _) = c.apply(&grown, &["--dry-run", "-o", "json"]);
    assert!(ok);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let step = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "volume")
        .unwrap()
        .clone();
    assert_eq!(step["action"], "update");
    assert_eq!(
        step["changes"],
        serde_json::json!([{"field": "size", "from": 1u64 << 30, "to": 2u64 << 30}])
    );
    assert_eq!(writes(&d), before, "a dry run wrote");
    assert_eq!(volume(&d, "acme", "db")["size"], 1u64 << 30);

    let was = volume(&d, "acme", "db");
    let (ok, out, err) = c.apply(&grown, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("updated volume acme/db: size 1G -> 2G"),
        "{out}"
    );
    assert_eq!(writes(&d), before + 1, "one field, one write");
    let now = volume(&d, "acme", "db");
    assert_eq!(now["size"], 2u64 << 30);
    for f in ["qos", "pool", "replicas", "encrypted", "id", "class"] {
        assert_eq!(now[f], was[f], "{f} changed");
    }

    // Shrinking is refused, and a fixed field needs --replace; neither writes.
    let before = writes(&d);
    let (ok, out, _) = c.apply(base, &[]);
    assert!(!ok);
    assert!(
        out.contains("FAILED volume acme/db: invalid_argument: size cannot shrink"),
        "{out}"
    );
    let (ok, out, _) = c.apply(
        &grown.replace("size: 2G", "size: 2G\npool: other"),
        &["--dry-run"],
    );
    assert!(!out.contains("REPLACED"), "{out}");
    assert!(
        out.contains("-/+ volume acme/db: pool default -> other") && out.contains("--replace"),
        "{out}"
    );
    assert!(ok);
    assert_eq!(writes(&d), before);
}

#[test]
fn prune_deletes_only_what_the_file_no_longer_names_within_its_kinds_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let c = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let vol = |t: &str, n: &str| format!("---\nkind: volume\nname: {n}\ntenant: {t}\nsize: 64M\n");
    let setup = format!(
        "kind: tenant\nname: acme\n---\nkind: tenant\nname: beta\n{}{}{}---\nkind: network\nname: n1\ntenant: acme\ncidr: 10.1.0.0/16\n",
        vol("acme", "v1"),
        vol("acme", "v2"),
        vol("beta", "b1")
    );
    let (ok, out, err) = c.apply(&setup, &[]);
    assert!(ok, "{out}\n{err}");
    // Give v2 data, so that its delete is said loudly.
    let id = volume(&d, "acme", "v2")["id"].as_str().unwrap().to_string();
    let (st, v) = d.call(
        "POST",
        &format!("/v1/volumes/{id}/snapshots"),
        &d.admin(),
        Some(serde_json::json!({"name": "s1"})),
    );
    assert_eq!(st, 201, "{v}");

    let only_v1 = format!("kind: tenant\nname: acme\n{}", vol("acme", "v1"));
    let (ok, out, err) = c.apply(&only_v1, &["--prune", "--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("- volume acme/v2  !!! DELETES DATA: volume holds"),
        "{out}"
    );
    assert!(!out.contains("beta") && !out.contains("n1"), "{out}");
    assert_eq!(volume(&d, "acme", "v2")["name"], "v2");

    let (ok, out, err) = c.apply(&only_v1, &["--prune"]);
    assert!(
        !ok,
        "the volume with a snapshot is not deleted by force: {out}\n{err}"
    );
    assert!(out.contains("FAILED volume acme/v2"), "{out}");
    let (_, snaps) = d.call(
        "GET",
        &format!("/v1/volumes/{id}/snapshots"),
        &d.admin(),
        None,
    );
    let sid = snaps["items"][0]["id"].as_str().unwrap().to_string();
    let (st, _) = d.call("DELETE", &format!("/v1/snapshots/{sid}"), &d.admin(), None);
    assert_eq!(st, 204);
    let (ok, out, err) = c.apply(&only_v1, &["--prune"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("deleted volume acme/v2"), "{out}");
    assert!(volume(&d, "acme", "v2").is_null());
    // Another tenant's volume and a kind the file does not name survive.
    assert_eq!(volume(&d, "beta", "b1")["name"], "b1");
    let (st, n) = d.call("GET", "/v1/networks?tenant=acme", &d.admin(), None);
    assert_eq!((st, n["items"].as_array().unwrap().len()), (200, 1), "{n}");
    // A file of tenants only prunes no volume (and never a tenant).
    let (ok, out, _) = c.apply("kind: tenant\nname: acme\n", &["--prune"]);
    assert!(ok, "{out}");
    assert_eq!(volume(&d, "acme", "v1")["name"], "v1");
    assert_eq!(volume(&d, "beta", "b1")["name"], "b1");
}

#[test]
fn a_bad_object_fails_alone_dependents_are_skipped_and_bad_files_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let c = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let file = "kind: tenant\nname: acme\n---\nkind: network\nname: bad\ntenant: acme\ncidr: 10.0.0.0/33\n---\nkind: subnet\nname: s\ntenant: acme\nnetwork: bad\ncidr: 10.0.0.0/24\n---\nkind: volume\nname: ok\ntenant: acme\nsize: 64M\n";
    let (ok, out, err) = c.apply(file, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED network acme/bad: invalid_argument:"),
        "{out}"
    );
    assert!(
        out.contains("skipped subnet acme/s: it depends on network acme/bad"),
        "{out}"
    );
    assert!(out.contains("created volume acme/ok"), "{out}");
    assert!(out.contains("1 failed, 1 skipped"), "{out}");
    assert!(err.contains("1 object(s) failed and 1 skipped"), "{err}");
    assert_eq!(volume(&d, "acme", "ok")["name"], "ok");
    let (ok, j, _) = c.apply(file, &["-o", "json"]);
    assert!(!ok);
    let v: Value = serde_json::from_str(&j).unwrap();
    let net = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bad")
        .unwrap()
        .clone();
    assert_eq!(
        (net["outcome"].as_str(), net["code"].as_str()),
        (Some("failed"), Some("invalid_argument"))
    );

    // An unknown field anywhere refuses the whole file before any write, with its line.
    let before = writes(&d);
    let bad = "kind: volume\nname: new\ntenant: acme\nsize: 64M\n---\nkind: volume\nname: ok\ntenant: acme\nqos: {iops_limt: 5}\n";
    let (ok, out, err) = c.apply(bad, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("apply.yaml:9: unknown field \"iops_limt\""),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    let (ok, _, err) = c.apply("kind: volumes\nname: x\n", &[]);
    assert!(
        !ok && err.contains("apply.yaml:1: unknown kind \"volumes\""),
        "{err}"
    );
    assert_eq!(writes(&d), before);
    assert!(volume(&d, "acme", "new").is_null());
}

#[test]
fn a_tenant_token_applies_its_own_objects_and_is_refused_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let admin = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let (ok, out, err) = admin.apply("kind: tenant\nname: t1\n---\nkind: tenant\nname: t2\n---\nkind: volume\nname: theirs\ntenant: t2\nsize: 64M\n", &[]);
    assert!(ok, "{out}\n{err}");
    let (st, tok) = d.call(
        "POST",
        "/v1/tokens",
        &d.admin(),
        Some(serde_json::json!({"tenant": "t1", "role": "member"})),
    );
    assert_eq!(st, 201, "{tok}");
    let t1 = Cli {
        d: &d,
        dir: dir.path(),
        token: Some(tok["token"].as_str().unwrap().to_string()),
    };
    let mine = "kind: volume\nname: mine\ntenant: t1\nsize: 64M\n---\nkind: network\nname: n\ntenant: t1\ncidr: 10.5.0.0/16\n";
    let (ok, out, err) = t1.apply(mine, &[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(volume(&d, "t1", "mine")["name"], "mine");
    let (ok, out, _) = t1.apply(mine, &[]);
    assert!(ok && out.starts_with("nothing to change"), "{out}");
    let got = t1.ok(&["get", "all", "-o", "yaml"]);
    assert!(
        got.contains("name: mine") && !got.contains("theirs"),
        "{got}"
    );

    let (ok, out, _) = t1.apply("kind: volume\nname: x\ntenant: t2\nsize: 64M\n---\nkind: volume\nname: y\ntenant: t1\nsize: 64M\n", &[]);
    assert!(!ok);
    assert!(
        out.contains("FAILED volume t2/x: tenant_not_found")
            || out.contains("FAILED volume t2/x: not_found"),
        "{out}"
    );
    assert!(out.contains("created volume t1/y"), "{out}");
    let (ok, out, _) = t1.apply("kind: tenant\nname: t1\nquota: {volumes: 1000}\n", &[]);
    assert!(!ok);
    assert!(out.contains("FAILED tenant t1: forbidden"), "{out}");
    assert!(volume(&d, "t2", "x").is_null());
}

const SCHEDULES_AND_BALANCERS: &str = r#"kind: tenant
name: acme
---
kind: volume
name: db
tenant: acme
size: 64M
---
kind: volume
name: logs
tenant: acme
size: 64M
---
kind: snapshot_schedule
name: hourly
tenant: acme
volumes: [db]
interval: 60m
keep: 24
---
kind: snapshot_schedule
name: ckpt
tenant: acme
volumes: [logs, db]
interval: 1d
keep: 3
paused: true
---
kind: network
name: vpc1
tenant: acme
cidr: 10.20.0.0/16
---
kind: subnet
name: web
tenant: acme
network: vpc1
cidr: 10.20.1.0/24
---
kind: port
name: web1
tenant: acme
network: vpc1
subnet: web
---
kind: port
name: web2
tenant: acme
network: vpc1
subnet: web
---
kind: load_balancer
name: lb1
tenant: acme
network: vpc1
subnet: web
listeners:
- protocol: tcp
  port: 80
  backends:
  - {port: web1, weight: 2}
  - {port: web2}
- protocol: udp
  port: 53
  backends: [{port: web1, target_port: 5353}]
health_check: {kind: none}
---
kind: load_balancer
name: lb2
tenant: acme
network: vpc1
subnet: web
listeners:
- {protocol: tcp, port: 443, backends: [{port: web2}]}
"#;

fn schedule(d: &Daemon, name: &str) -> Value {
    let (st, v) = d.call(
        "GET",
        "/v1/snapshot-schedules?tenant=acme",
        &d.admin(),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn balancer(d: &Daemon, name: &str) -> Value {
    let (_, nets) = d.call("GET", "/v1/networks?tenant=acme", &d.admin(), None);
    let net = nets["items"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = d.call(
        "GET",
        &format!("/v1/networks/{net}/load-balancers"),
        &d.admin(),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn snapshot_schedules_and_load_balancers_apply_round_trip_diff_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"));
    let c = Cli {
        d: &d,
        dir: dir.path(),
        token: None,
    };
    let (ok, out, err) = c.apply(SCHEDULES_AND_BALANCERS, &[]);
    assert!(ok, "{out}\n{err}");
    for k in [
        "snapshot_schedule acme/hourly",
        "snapshot_schedule acme/ckpt",
        "load_balancer acme/lb1",
        "load_balancer acme/lb2",
    ] {
        assert!(out.contains(&format!("created {k}")), "{k}: {out}");
    }
    let db = volume(&d, "acme", "db")["id"].clone();
    let hourly = schedule(&d, "hourly");
    assert_eq!(
        (
            &hourly["interval"],
            &hourly["keep"],
            &hourly["paused"],
            &hourly["volumes"]
        ),
        (&json!("1h"), &json!(24), &json!(false), &json!([db])),
        "{hourly}"
    );
    let ckpt = schedule(&d, "ckpt");
    assert_eq!(
        (&ckpt["paused"], ckpt["volumes"].as_array().unwrap().len()),
        (&json!(true), 2)
    );
    let lb1 = balancer(&d, "lb1");
    let tcp = lb1["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["protocol"] == "tcp")
        .unwrap()
        .clone();
    let mut weights: Vec<u64> = tcp["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    weights.sort();
    assert_eq!(weights, [1, 2], "{lb1}");
    assert!(lb1.to_string().contains("5353"), "{lb1}");

    // A second apply writes nothing; so does what `get` prints, kind by kind and all.
    let before = writes(&d);
    let (ok, out, err) = c.apply(SCHEDULES_AND_BALANCERS, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.starts_with("nothing to change"), "{out}");
    for k in ["snapshot_schedule", "load_balancer"] {
        let yaml = c.ok(&["get", k, "-o", "yaml"]);
        assert!(yaml.contains(&format!("kind: {k}\n")), "{yaml}");
        let f = c.file(&format!("{k}.yaml"), &yaml);
        let (ok, out, err) = c.run(&["apply", "-f", &f]);
        assert!(
            ok && out.starts_with("nothing to change"),
            "{k}: {out}\n{err}\n{yaml}"
        );
    }
    let all = c.ok(&["get", "all", "-o", "yaml"]);
    assert!(
        all.contains("kind: snapshot_schedule\n") && all.contains("kind: load_balancer\n"),
        "{all}"
    );
    let (ok, out, err) = c.run_in(&["apply", "-f", "-"], Some(&all));
    assert!(
        ok && out.starts_with("nothing to change"),
        "{out}\n{err}\n{all}"
    );
    assert_eq!(writes(&d), before, "a round trip wrote");

    // A dry run shows the field diffs and changes nothing.
    let changed = SCHEDULES_AND_BALANCERS
        .replace("interval: 60m\nkeep: 24", "interval: 30m\nkeep: 12")
        .replace("{port: web1, weight: 2}", "{port: web1, weight: 3}")
        .replace(
            "health_check: {kind: none}",
            "health_check: {kind: none}\nsession_affinity: true",
        );
    let (ok, out, err) = c.apply(&changed, &["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("~ snapshot_schedule acme/hourly: interval 1h -> 30m, keep 24 -> 12\n"),
        "{out}"
    );
    assert!(
        out.contains("~ load_balancer acme/lb1: listeners "),
        "{out}"
    );
    assert!(out.contains("session_affinity false -> true"), "{out}");
    assert!(out.contains("= snapshot_schedule acme/ckpt"), "{out}");
    assert!(out.contains("= load_balancer acme/lb2"), "{out}");
    let (ok, out, _) = c.apply(&changed, &["--dry-run", "-o", "json"]);
    assert!(ok);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let step = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hourly")
        .unwrap()
        .clone();
    assert_eq!(
        step["changes"],
        json!([{"field": "interval", "from": "1h", "to": "30m"},
               {"field": "keep", "from": 24, "to": 12}])
    );
    assert_eq!(writes(&d), before, "a dry run wrote");
    assert_eq!(schedule(&d, "hourly")["keep"], 24);

    // Applied: one write for the schedule, one for the listeners, one for the settings.
    let (ok, out, err) = c.apply(&changed, &[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(writes(&d), before + 3, "{out}");
    let now = schedule(&d, "hourly");
    assert_eq!(
        (&now["interval"], &now["keep"], &now["id"]),
        (&json!("30m"), &json!(12), &hourly["id"])
    );
    let lb = balancer(&d, "lb1");
    assert_eq!(
        (&lb["session_affinity"], &lb["id"], &lb["vip"]),
        (&json!(true), &lb1["id"], &lb1["vip"])
    );
    assert!(lb.to_string().contains("\"weight\":3"), "{lb}");
    let (ok, out, _) = c.apply(&changed, &[]);
    assert!(ok && out.starts_with("nothing to change"), "{out}");

    // Prune deletes the schedule and the balancer the file no longer names, and only those.
    let cut = |text: &str, from: &str, to: &str| {
        let i = text.find(from).unwrap();
        let j = text[i..].find(to).map_or(text.len(), |j| i + j);
        format!("{}{}", &text[..i], &text[j..])
    };
    let fewer = cut(
        &changed,
        "kind: snapshot_schedule\nname: ckpt",
        "kind: network",
    );
    let fewer = cut(&fewer, "---\nkind: load_balancer\nname: lb2", "\u{0}");
    let (ok, out, err) = c.apply(&fewer, &["--prune", "--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("- snapshot_schedule acme/ckpt"), "{out}");
    assert!(out.contains("- load_balancer acme/lb2"), "{out}");
    assert!(!schedule(&d, "ckpt").is_null() && !balancer(&d, "lb2").is_null());
    let (ok, out, err) = c.apply(&fewer, &["--prune"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("deleted snapshot_schedule acme/ckpt"), "{out}");
    assert!(out.contains("deleted load_balancer acme/lb2"), "{out}");
    assert!(schedule(&d, "ckpt").is_null() && balancer(&d, "lb2").is_null());
    assert_eq!(schedule(&d, "hourly")["id"], hourly["id"]);
    assert_eq!(balancer(&d, "lb1")["id"], lb1["id"]);
    let (_, t) = d.call("GET", "/v1/tenants/acme", &d.admin(), None);
    assert_eq!(t["usage"]["snapshot_schedules"], 1, "{t}");
}
