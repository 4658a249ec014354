//! The event journal and the alert rules against a live daemon (issue 16): a device fault
//! gives a `device.faulted` event and a rebuild started/finished pair; a quota refusal is an
//! event; `strata events --follow` prints what happens after it started; a tenant sees only
//! its own; events outlive a restart; newest first with `--limit`, `--since` and `--type`.
//! `strata alerts` passes `promtool check rules` and `promtool test rules`, and names only
//! metrics a live daemon's `/metrics` exports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::replicas::Loop;

fn cli(d: &Daemon, token: &str, args: &[&str]) -> std::process::Output {
    strata()
        .args(args)
        .args(["--endpoint", &d.url, "--token", token])
        .output()
        .unwrap()
}

fn events(d: &Daemon, token: &str, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["events", "-o", "json"];
    a.extend_from_slice(args);
    let o = cli(d, token, &a);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["items"].as_array().unwrap().clone()
}

/// Waits (at most `secs`) until the admin's journal holds an event of `kind` about `object`.
fn wait_event(d: &Daemon, admin: &str, kind: &str, object: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, v) = d.call("GET", "/v1/events?limit=1000", admin, None);
        assert_eq!(s, 200, "{v}");
        if let Some(e) = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind && e["object"] == object)
        {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "{kind} of {object} in {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn token(d: &Daemon, admin: &str, tenant: &str) -> String {
    let (s, v) = d.call(
        "POST",
        "/v1/tokens",
        admin,
        Some(json!({"tenant": tenant, "role": "tenant-admin"})),
    );
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn a_device_fault_gives_a_fault_event_and_a_rebuild_started_finished_pair() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let a = Loop::new(&dir.path().join("a.img"), 128 << 20);
    let b = Loop::new(&dir.path().join("b.img"), 128 << 20);
    let o = cli(
        &d,
        &admin,
        &[
            "pool",
            "create",
            "fast",
            "--device",
            &a.dev,
            "--device",
            &b.dev,
            "--replicas",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "ckpt", "size": "16M", "pool": "fast"})),
    );
    assert_eq!(s, 201, "{v}");
    let vid = v["id"].as_str().unwrap().to_string();
    let copies: Vec<String> = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let (s, p) = d.call("GET", "/v1/pools/fast", &admin, None);
    assert_eq!(s, 200);
    let path_of = |id: &str| {
        p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let lost = [&a, &b]
        .into_iter()
        .find(|l| l.dev == path_of(&copies[1]))
        .unwrap();
    let (s, at) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &admin,
        None,
    );
    assert!(s == 200 || s == 201, "{at}");
    let uri = at["uri"].as_str().unwrap().to_string();
    // No fault yet: no fault event.
    assert!(events(&d, &admin, &["--type", "device.faulted"]).is_empty());
    lost.fail();
    let img = dir.path().join("w.img");
    std::fs::write(&img, vec![7u8; 16 << 20]).unwrap();
    let s = Command::new("nbdcopy")
        .args(["--flush", img.to_str().unwrap(), &uri])
        .status()
        .unwrap();
    assert!(s.success(), "the client saw no error");
    let fault = wait_event(&d, &admin, "device.faulted", &copies[1], 30);
    assert_eq!(fault["severity"], "error", "{fault}");
    assert_eq!(fault["object_kind"], "device", "{fault}");
    assert!(fault["tenant"].is_null(), "{fault}");
    // A new device: the lost copy is rebuilt there; started, then finished, in that order.
    let c = Loop::new(&dir.path().join("c.img"), 128 << 20);
    let o = cli(&d, &admin, &["pool", "add-device", "fast", &c.dev]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let started = wait_event(&d, &admin, "volume.rebuild_started", &vid, 60);
    let finished = wait_event(&d, &admin, "volume.rebuild_finished", &vid, 120);
    assert!(started["seq"].as_u64() < finished["seq"].as_u64());
    assert!(fault["seq"].as_u64() < started["seq"].as_u64());
    for e in [&started, &finished] {
        assert_eq!(e["tenant"], "default", "{e}");
        assert_eq!(e["name"], "ckpt", "{e}");
    }
    assert_eq!(started["severity"], "warning");
    assert_eq!(finished["severity"], "info");
    // The CLI's table shows them, newest first: the finish above the start.
    let o = cli(&d, &admin, &["events", "--type", "volume"]);
    let t = String::from_utf8_lossy(&o.stdout);
    let (f, s) = (
        t.find("volume.rebuild_finished").unwrap(),
        t.find("volume.rebuild_started").unwrap(),
    );
    assert!(f < s, "{t}");
    assert!(t.starts_with("TIME (UTC)"), "{t}");
    drop(d);
}

#[test]
fn quota_refusals_follow_tenants_order_filters_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let admin = d.admin();
    for (t, q) in [("t1", 1), ("t2", 10)] {
        let (s, v) = d.call(
            "POST",
            "/v1/tenants",
            &admin,
            Some(json!({"name": t, "quota": {"volumes": q}})),
        );
        assert_eq!(s, 201, "{v}");
    }
    let (t1, t2) = (token(&d, &admin, "t1"), token(&d, &admin, "t2"));
    let create = |tok: &str, name: &str| {
        d.call(
            "POST",
            "/v1/volumes",
            tok,
            Some(json!({"name": name, "size": "16M"})),
        )
    };
    assert_eq!(create(&t1, "a").0, 201);
    assert_eq!(create(&t2, "b").0, 201);
    // No refusal yet: no refusal event (the test would pass on any journal otherwise).
    assert!(events(&d, &admin, &["--type", "tenant.quota_refused"]).is_empty());
    let (s, v) = create(&t1, "over");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("quota_exceeded"))
    );
    let refused = events(&d, &t1, &["--type", "tenant"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["type"], "tenant.quota_refused");
    assert_eq!(refused[0]["tenant"], "t1");
    assert_eq!(refused[0]["severity"], "warning");
    assert!(
        refused[0]["message"].as_str().unwrap().contains("over"),
        "{refused:?}"
    );
    // An admin refused by t1's quota on t1's behalf: the event is t1's, so t1 sees it.
    let (s, _) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "by-admin", "size": "16M", "tenant": "t1"})),
    );
    assert_eq!(s, 409);
    let refused = events(&d, &t1, &["--type", "tenant"]);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["tenant"], "t1", "{refused:?}");
    assert_eq!(
        refused[0]["object"], "t1",
        "the object is the tenant: {refused:?}"
    );
    assert!(refused[0]["message"].as_str().unwrap().contains("by-admin"));

    // A tenant sees only its own; an admin sees all, and filters by tenant.
    let mine = events(&d, &t2, &[]);
    assert!(mine.iter().all(|e| e["tenant"] == "t2"), "{mine:?}");
    assert!(!mine.iter().any(|e| e["type"] == "tenant.quota_refused"));
    let o = cli(&d, &t2, &["events", "--tenant", "t1"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tenant_not_found"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let all = events(&d, &admin, &[]);
    assert!(all.iter().any(|e| e["type"] == "node.up"), "{all:?}");
    assert!(all.iter().any(|e| e["tenant"] == "t1"));
    let only = events(&d, &admin, &["--tenant", "t1"]);
    assert!(!only.is_empty() && only.iter().all(|e| e["tenant"] == "t1"));

    // --follow prints the newest first, then what happens after it started.
    let mut follow = strata()
        .args([
            "events",
            "--follow",
            "-o",
            "json",
            "--endpoint",
            &d.url,
            "--token",
            &t1,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(serde_json::from_str(&l).unwrap()).is_err() {
                break;
            }
        }
    });
    // t1's history first, newest first (its two refusals), then nothing until a new one.
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["seq"], refused[0]["seq"], "{first}");
    let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(second["seq"], refused[1]["seq"], "{second}");
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err());
    let (s, _) = create(&t1, "over2");
    assert_eq!(s, 409);
    let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(next["type"], "tenant.quota_refused", "{next}");
    assert!(
        next["message"].as_str().unwrap().contains("over2"),
        "{next}"
    );
    // t2's refusal is not t1's to see.
    let (s, _) = d.call(
        "PATCH",
        "/v1/tenants/t2/quota",
        &admin,
        Some(json!({"volumes": 1})),
    );
    assert_eq!(s, 200);
    assert_eq!(create(&t2, "c").0, 409);
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err());
    follow.kill().unwrap();
    let _ = follow.wait();

    // Newest first, --limit, --since (a time after the first refusals), --type by kind.
    let all = events(&d, &admin, &[]);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let two = events(&d, &admin, &["--limit", "2"]);
    assert_eq!(two, all[..2].to_vec());
    std::thread::sleep(Duration::from_millis(1100));
    let now = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(events(&d, &admin, &["--since", now.trim()]).is_empty());
    assert_eq!(create(&t1, "over3").0, 409);
    let later = events(&d, &admin, &["--since", now.trim()]);
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0]["message"].as_str().unwrap().contains("over3"));
    assert_eq!(
        events(&d, &admin, &["--since", "1h"]),
        events(&d, &admin, &[])
    );
    let nodes = events(&d, &admin, &["--type", "node"]);
    assert!(!nodes.is_empty());
    assert!(nodes
        .iter()
        .all(|e| e["type"].as_str().unwrap().starts_with("node.")));

    // A restart keeps them, after a clean node.down.
    let before = events(&d, &admin, &["--limit", "1000"]);
    d.stop();
    let d = Daemon::start(&data);
    let after = events(&d, &admin, &["--limit", "1000"]);
    let kinds: Vec<&str> = after.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..2], ["node.up", "node.down"], "{kinds:?}");
    assert_eq!(after[2..], before[..], "the journal outlived the restart");
    assert!(after[0]["seq"].as_u64() > before[0]["seq"].as_u64());
}

/// Metric names an expression reads (`strata_...`, histogram suffixes stripped).
fn metric_names(rules: &Value) -> Vec<String> {
    let mut names: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .flat_map(|r| {
            let e = r["expr"].as_str().unwrap();
            e.match_indices("strata_")
                .map(|(i, _)| {
                    e[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_alert_rules_pass_promtool_and_name_only_metrics_the_daemon_exports() {
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.yml");
    let o = strata().arg("alerts").output().unwrap();
    assert!(o.status.success());
    std::fs::write(&rules_file, &o.stdout).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The expected descriptions are the rules' own (static text); summaries are spelled out.
    let rules: Value = serde_yaml::from_slice(&o.stdout).unwrap();
    let mut input = PROMTOOL_TESTS.to_string();
    for r in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let tag = format!("@DESC:{}@", r["alert"].as_str().unwrap());
        input = input.replace(&tag, &r["annotations"]["description"].to_string());
    }
    assert!(!input.contains("@DESC:"), "{input}");
    let tests = dir.path().join("tests.yml");
    std::fs::write(&tests, input).unwrap();
    let t = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "{}{}",
        String::from_utf8_lossy(&t.stdout),
        String::from_utf8_lossy(&t.stderr)
    );
    // Every metric the rules read is one a live daemon exports (its HELP line is there
    // whether or not a series is).
    let names = metric_names(&rules);
    assert!(names.len() >= 12, "{names:?}");
    let d = Daemon::start(&dir.path().join("d"));
    let m = d.metrics();
    promtool_check(&m);
    for n in &names {
        assert!(
            m.contains(&format!("# TYPE {n} ")),
            "{n} is not exported:\n{m}"
        );
    }
    // This daemon's node is up.
    assert!(m.contains("strata_node_up{node="), "{m}");
    assert!(m
        .lines()
        .any(|l| l.starts_with("strata_node_up{") && l.ends_with(" 1")));
    // The YAML is the document; JSON is the same document.
    let j = strata().args(["alerts", "-o", "json"]).output().unwrap();
    let j: Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(j, rules);
}

/// `promtool test rules` input: series and the alerts that must fire, and must not.
const PROMTOOL_TESTS: &str = r#"
rule_files:
  - rules.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'strata_pool_allocated_bytes{pool="full"}'
        values: '90x20'
      - series: 'strata_pool_capacity_bytes{pool="full"}'
        values: '100x20'
      - series: 'strata_pool_allocated_bytes{pool="roomy"}'
        values: '10x20'
      - series: 'strata_pool_capacity_bytes{pool="roomy"}'
        values: '100x20'
      - series: 'strata_volume_copies{volume="v1",name="a",tenant="t",state="healthy"}'
        values: '1x20'
      - series: 'strata_volume_copies{volume="v1",name="a",tenant="t",state="total"}'
        values: '2x20'
      - series: 'strata_volume_copies{volume="v2",name="b",tenant="t",state="healthy"}'
        values: '2x20'
      - series: 'strata_volume_copies{volume="v2",name="b",tenant="t",state="total"}'
        values: '2x20'
      - series: 'strata_device_checksum_errors_total{pool="p",device="d1",class="ssd"}'
        values: '0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'strata_device_checksum_errors_total{pool="p",device="d2",class="ssd"}'
        values: '0x20'
      - series: 'strata_device_healthy{pool="p",device="d1",class="ssd"}'
        values: '1 1 1 0x17'
      - series: 'strata_pool_scrub_unrepaired_blocks{pool="p"}'
        values: '2x20'
      - series: 'strata_pool_scrub_unrepaired_blocks{pool="q"}'
        values: '0x20'
      - series: 'strata_node_up{node="n1"}'
        values: '1 1 0x18'
      - series: 'strata_node_up{node="n2"}'
        values: '1x20'
      - series: 'strata_network_port_drops_total{tenant="t",network="n",port="p1",reason="nat_exhausted"}'
        values: '0+600x20'
      - series: 'strata_network_port_drops_total{tenant="t",network="n",port="p2",reason="drop_action"}'
        values: '0+600x20'
      - series: 'strata_pool_allocated_ratio{pool="full"}'
        values: '0.95x20'
      - series: 'strata_pool_allocated_ratio{pool="roomy"}'
        values: '0.2x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: StrataPoolNearlyFull
        exp_alerts:
          - exp_labels: {severity: warning, pool: full}
            exp_annotations:
              summary: "Pool full is 90% allocated"
              description: @DESC:StrataPoolNearlyFull@
      - eval_time: 15m
        alertname: StrataPoolFull
        exp_alerts: []
      - eval_time: 16m
        alertname: StrataPoolOvercommitted
        exp_alerts:
          - exp_labels: {severity: warning, pool: full}
            exp_annotations:
              summary: "Pool full has provisioned 95% of its allocation limit"
              description: @DESC:StrataPoolOvercommitted@
      - eval_time: 10m
        alertname: StrataVolumeDegraded
        exp_alerts:
          - exp_labels: {severity: warning, volume: v1, name: a, tenant: t}
            exp_annotations:
              summary: "Volume a of tenant t has 1 healthy copies"
              description: @DESC:StrataVolumeDegraded@
      - eval_time: 10m
        alertname: StrataVolumeUnavailable
        exp_alerts: []
      - eval_time: 5m
        alertname: StrataChecksumErrors
        exp_alerts:
          - exp_labels: {severity: warning, pool: p, device: d1, class: ssd}
            exp_annotations:
              summary: "Device d1 of pool p returned blocks failing their checksum in the last 15 minutes"
              description: @DESC:StrataChecksumErrors@
      - eval_time: 10m
        alertname: StrataDeviceFaulted
        exp_alerts:
          - exp_labels: {severity: critical, pool: p, device: d1, class: ssd}
            exp_annotations:
              summary: "Device d1 of pool p is faulted or missing"
              description: @DESC:StrataDeviceFaulted@
      - eval_time: 1m
        alertname: StrataDeviceFaulted
        exp_alerts: []
      - eval_time: 5m
        alertname: StrataScrubUnrepairedBlocks
        exp_alerts:
          - exp_labels: {severity: critical, pool: p}
            exp_annotations:
              summary: "The last scrub of pool p found 2 blocks it could not repair"
              description: @DESC:StrataScrubUnrepairedBlocks@
      - eval_time: 10m
        alertname: StrataNodeDown
        exp_alerts:
          - exp_labels: {severity: critical, node: n1}
            exp_annotations:
              summary: "Node n1 is down"
              description: @DESC:StrataNodeDown@
      - eval_time: 15m
        alertname: StrataSwitchDrops
        exp_alerts:
          - exp_labels: {severity: warning, tenant: t, network: n, port: p1, reason: nat_exhausted}
            exp_annotations:
              summary: "Port p1 of network n (tenant t) drops packets: nat_exhausted"
              description: @DESC:StrataSwitchDrops@
"#;
