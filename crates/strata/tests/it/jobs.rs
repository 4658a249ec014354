//! Placement against the real daemon: declared hypothetical nodes, jobs placed or queued with
//! the engine's explanation, the GPU quota, dry runs that change nothing, admission when a job
//! is deleted, tenant scoping, stale plans; and the local node's GPUs where nvidia-smi exists.
//! A job's slice (ports on a tenant subnet with their guarantees, clones of a checkpoint
//! group): made with the job, shown, deleted with it; a failure injected at every step (and
//! a crash in the middle) leaves every count as it was; a dry run makes nothing; another
//! tenant's network or group cannot be named.

use serde_json::{json, Value};

use crate::common::Daemon;

const NODES: &str = "\
nodes:
  - name: gpu-1
    cpu: 64
    memory: 1Ti
    nic: 400G
    gpus: [{model: H200, count: 8, memory: 141Gi}]
    islands: [[0,1,2,3],[4,5,6,7]]
    labels: {rack: r1}
  - name: gpu-2
    cpu: 64
    memory: 1Ti
    nic: 400G
    gpus: [{model: H200, count: 4, memory: 141Gi}]
    labels: {rack: r1}
";

pub(crate) fn token(d: &Daemon, tenant: &str, role: &str) -> String {
    let admin = d.admin();
    let (s, v) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": tenant, "role": role})),
    );
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

fn setup() -> (tempfile::TempDir, Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&dir.path().join("data"), &["--node", "local-1"]);
    let admin = d.admin();
    for t in ["acme", "beta"] {
        let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!({"name": t})));
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = d.call(
        "POST",
        "/v1/nodes",
        &admin,
        Some(json!({"inventory": NODES})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert!(v["items"][0]["hypothetical"].as_bool().unwrap());
    (dir, d, admin)
}

fn job(name: &str, gpus: u64) -> Value {
    json!({"name": name, "gpus": gpus, "gpu_model": "H200", "cpu_cores": 4,
           "memory_bytes": 1u64 << 30, "same_island": true})
}

#[test]
fn the_local_node_registers_and_declared_nodes_are_marked_hypothetical() {
    let (_dir, d, admin) = setup();
    let (s, v) = d.call("GET", "/v1/nodes/local-1", &admin, None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hypothetical"], false);
    assert!(v["cpu_cores"].as_u64().unwrap() >= 1);
    assert!(v["memory_bytes"].as_u64().unwrap() > 0);
    assert!(
        !v["storage"].as_array().unwrap().is_empty(),
        "pool devices: {v}"
    );
    // A declaration may not replace a real node.
    let (s, v) = d.call(
        "POST",
        "/v1/nodes",
        &admin,
        Some(json!({"inventory": "nodes:\n  - {name: local-1, cpu: 1, memory: 1G}\n"})),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("node_exists")));
    // A bad inventory is refused (a string the schema allows, a document the pool does not).
    let (s, v) = d.call(
        "POST",
        "/v1/nodes",
        &admin,
        Some(json!({"inventory": "nodes:\n  - {name: x, cpu: 1, memory: 1G, typo: 3}\n"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("inventory_invalid"))
    );
    // The CLI lists them, hypothetical ones marked.
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &admin,
            "node",
            "list",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hypo: Vec<(&str, bool)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["hypothetical"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(hypo, [("gpu-1", true), ("gpu-2", true), ("local-1", false)]);
}

#[test]
fn jobs_place_queue_with_an_explanation_and_are_admitted_when_room_frees() {
    let (_dir, d, _admin) = setup();
    let acme = token(&d, "acme", "member");
    let (s, a) = d.call("POST", "/v1/jobs", &acme, Some(job("train-a", 4)));
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["state"], "running");
    assert_eq!(a["nodes"], "gpu-1");
    assert_eq!(a["placement"][0]["gpus"].as_array().unwrap().len(), 4);
    let (s, b) = d.call("POST", "/v1/jobs", &acme, Some(job("train-b", 4)));
    assert_eq!((s, b["state"].as_str()), (201, Some("running")));
    // Every 4-GPU island is taken now: gpu-2's four GPUs are not one NVLink island.
    let (s, c) = d.call("POST", "/v1/jobs", &acme, Some(job("train-c", 4)));
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["state"], "pending");
    let why = c["explanation"]["message"].as_str().unwrap();
    assert!(why.contains("island"), "{why}");
    assert!(c["explanation"]["binding"]
        .as_array()
        .unwrap()
        .contains(&json!("island")));
    // Deleting a running job admits the waiting one.
    let (s, _) = d.call("DELETE", "/v1/jobs/train-a", &acme, None);
    assert_eq!(s, 204);
    let (s, c) = d.call("GET", "/v1/jobs/train-c", &acme, None);
    assert_eq!(s, 200);
    assert_eq!(c["state"], "running", "{c}");
    assert!(c["explanation"].is_null());
}

#[test]
fn a_tenant_over_its_gpu_quota_is_refused_and_usage_follows_jobs() {
    let (_dir, d, admin) = setup();
    let (s, v) = d.call(
        "PATCH",
        "/v1/tenants/acme/quota",
        &admin,
        Some(json!({"gpus": 6})),
    );
    assert_eq!(s, 200, "{v}");
    let acme = token(&d, "acme", "member");
    let (s, _) = d.call("POST", "/v1/jobs", &acme, Some(job("a", 4)));
    assert_eq!(s, 201);
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(job("b", 4)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("quota_exceeded"))
    );
    // A dry run answers what the create would.
    let (s, v) = d.call("POST", "/v1/plans", &acme, Some(job("b", 4)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("quota_exceeded"))
    );
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(t["usage"]["gpus"], 4);
    d.call("DELETE", "/v1/jobs/a", &acme, None);
    let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(t["usage"]["gpus"], 0);
    let (s, _) = d.call("POST", "/v1/jobs", &acme, Some(job("b", 4)));
    assert_eq!(s, 201);
}

#[test]
fn a_dry_run_changes_nothing_and_a_stale_plan_is_refused() {
    let (_dir, d, admin) = setup();
    let acme = token(&d, "acme", "member");
    let state = |d: &Daemon| {
        let (_, n) = d.call("GET", "/v1/nodes", &admin, None);
        let (_, j) = d.call("GET", "/v1/jobs", &admin, None);
        let (_, t) = d.call("GET", "/v1/tenants/acme", &admin, None);
        (n, j, t["usage"].clone())
    };
    let before = state(&d);
    let (s, p) = d.call("POST", "/v1/plans", &acme, Some(job("big", 8)));
    assert_eq!(s, 200, "{p}");
    // 8 GPUs in one island: no island has 8.
    assert_eq!(p["fits"], false);
    assert!(p["explanation"]["message"]
        .as_str()
        .unwrap()
        .contains("island"));
    let (s, p) = d.call("POST", "/v1/plans", &acme, Some(job("small", 2)));
    assert_eq!(s, 200);
    assert_eq!(p["fits"], true);
    assert_eq!(p["moves"][0]["to"], json!(["gpu-1"]));
    assert_eq!(state(&d), before, "a dry run changed state");
    let revision = p["revision"].as_u64().unwrap();
    // Something that places jobs changes: the plan is stale.
    let (s, _) = d.call("POST", "/v1/nodes/gpu-2/cordon", &admin, None);
    assert_eq!(s, 200);
    let mut stale = job("small", 2);
    stale["revision"] = json!(revision);
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(stale.clone()));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("plan_stale")));
    let (_, j) = d.call("GET", "/v1/jobs", &admin, None);
    assert!(j["items"].as_array().unwrap().is_empty());
    // A fresh plan applies, and lands where it said.
    let (_, p) = d.call("POST", "/v1/plans", &acme, Some(job("small", 2)));
    stale["revision"] = p["revision"].clone();
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(stale));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["placement"], p["placement"]);
}

#[test]
fn a_tenant_sees_only_its_jobs() {
    let (_dir, d, admin) = setup();
    let acme = token(&d, "acme", "member");
    let beta = token(&d, "beta", "member");
    let (s, _) = d.call("POST", "/v1/jobs", &acme, Some(job("secret", 1)));
    assert_eq!(s, 201);
    let (s, v) = d.call("GET", "/v1/jobs/secret", &beta, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    let (s, v) = d.call("DELETE", "/v1/jobs/secret", &beta, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    let (s, v) = d.call("GET", "/v1/jobs/secret?tenant=acme", &beta, None);
    assert_eq!(s, 404, "{v}");
    let (_, v) = d.call("GET", "/v1/jobs", &beta, None);
    assert!(v["items"].as_array().unwrap().is_empty());
    let (_, v) = d.call("GET", "/v1/jobs", &admin, None);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // The same name in another tenant is another job.
    let (s, _) = d.call("POST", "/v1/jobs", &beta, Some(job("secret", 1)));
    assert_eq!(s, 201);
    let (s, v) = d.call("POST", "/v1/jobs", &beta, Some(job("secret", 1)));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("job_exists")));
}

#[test]
fn uncordon_admits_a_waiting_job_and_the_cli_shows_it() {
    let (_dir, d, admin) = setup();
    for n in ["gpu-1", "gpu-2"] {
        let (s, _) = d.call("POST", &format!("/v1/nodes/{n}/cordon"), &admin, None);
        assert_eq!(s, 200);
    }
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &admin,
            "job",
            "create",
            "j1",
            "--gpus",
            "2",
            "--gpu-model",
            "H200",
            "--cpu",
            "2",
            "--memory",
            "8G",
            "--tenant",
            "acme",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "pending");
    assert!(
        v["explanation"]["binding"]
            .as_array()
            .unwrap()
            .contains(&json!("cordoned")),
        "{v}"
    );
    let (s, _) = d.call("POST", "/v1/nodes/gpu-2/uncordon", &admin, None);
    assert_eq!(s, 200);
    let (_, v) = d.call("GET", "/v1/jobs/j1?tenant=acme", &admin, None);
    assert_eq!(
        (v["state"].as_str(), v["nodes"].as_str()),
        (Some("running"), Some("gpu-2"))
    );
}

/// Runs where nvidia-smi exists; elsewhere it prints SKIP and checks nothing about GPUs.
#[test]
fn the_local_node_reports_the_gpus_nvidia_smi_sees() {
    let smi = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index", "--format=csv,noheader"])
        .output();
    let Some(out) = smi.ok().filter(|o| o.status.success()) else {
        eprintln!("SKIP the_local_node_reports_the_gpus_nvidia_smi_sees: no nvidia-smi here");
        return;
    };
    let want = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&dir.path().join("data"), &["--node", "local-1"]);
    let (_, v) = d.call("GET", "/v1/nodes/local-1", &d.admin(), None);
    assert_eq!(v["gpu_count"].as_u64(), Some(want), "{v}");
}

/// A tenant with jobs is not empty, GPU jobs or not: deleting it is refused while a CPU-only
/// job remains (it would be orphaned), and works once the job is gone.
#[test]
fn a_tenant_with_only_cpu_jobs_is_not_deleted() {
    let (_dir, d, admin) = setup();
    let acme = token(&d, "acme", "member");
    let cpu = json!({"name": "etl", "gpus": 0, "cpu_cores": 2, "memory_bytes": 1u64 << 30});
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(cpu));
    assert_eq!(s, 201, "{v}");
    let (s, v) = d.call("DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "tenant_not_empty", "{v}");
    let (s, _) = d.call("DELETE", "/v1/jobs/etl", &acme, None);
    assert_eq!(s, 204);
    let (s, v) = d.call("DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(s, 204, "{v}");
}

// ----- a job's slice -----

/// A daemon (with `env` for it alone) whose tenant acme has network `vpc` (subnet `web`, a
/// 100 Gbit/s cap), volumes shard0 and shard1 and their checkpoint group `ckpt`; the
/// declared nodes of [`NODES`]. Returns the acme member's token too.
fn slice_setup(env: &[(&str, &str)]) -> (tempfile::TempDir, Daemon, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_env(&dir.path().join("data"), &["--node", "local-1"], None, env);
    let admin = d.admin();
    let acme = slice_objects(&d, &admin);
    (dir, d, admin, acme)
}

fn slice_objects(d: &Daemon, admin: &str) -> String {
    for t in ["acme", "beta"] {
        let (s, v) = d.call("POST", "/v1/tenants", admin, Some(json!({"name": t})));
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = d.call(
        "POST",
        "/v1/nodes",
        admin,
        Some(json!({"inventory": NODES})),
    );
    assert_eq!(s, 201, "{v}");
    let acme = token(d, "acme", "member");
    let ok = |m: &str, path: &str, body: Value| -> Value {
        let (s, v) = d.call(m, path, &acme, Some(body));
        assert!(s == 200 || s == 201, "{m} {path}: {s} {v}");
        v
    };
    ok(
        "POST",
        "/v1/networks",
        json!({"name": "vpc", "cidr": "10.77.0.0/16"}),
    );
    ok(
        "POST",
        "/v1/networks/vpc/subnets",
        json!({"name": "web", "cidr": "10.77.1.0/24"}),
    );
    ok(
        "PUT",
        "/v1/networks/vpc/bandwidth",
        json!({"cap_bps": 100_000_000_000u64}),
    );
    let ids: Vec<Value> = ["shard0", "shard1"]
        .iter()
        .map(|n| ok("POST", "/v1/volumes", json!({"name": n, "size": "8M"}))["id"].clone())
        .collect();
    ok(
        "POST",
        "/v1/snapshot-groups",
        json!({"name": "ckpt", "volumes": ids}),
    );
    acme
}

/// A job with a slice: `gpus` H200 (spanning the rack when more than a node has), 10 Gbit/s,
/// a port on vpc/web and clones of ckpt named `data-shard0`, `data-shard1`.
fn slice_job(name: &str, gpus: u64) -> Value {
    let mut j = job(name, gpus);
    if gpus > 4 {
        j["same_island"] = json!(false);
        j["same_label"] = json!("rack");
    }
    j["bandwidth_bps"] = json!(10_000_000_000u64);
    j["network"] = json!("vpc");
    j["subnet"] = json!("web");
    j["volumes"] = json!([{"name": "data", "clone_group": "ckpt"}]);
    j
}

/// Everything a slice could leave behind, for before/after comparisons: the network's ports
/// (name, device, guarantee), acme's volumes, jobs and quota usage, the network's figures.
fn slice_state(d: &Daemon, admin: &str, acme: &str) -> Value {
    let (_, ports) = d.call("GET", "/v1/networks/vpc/ports", acme, None);
    let ports: Vec<Value> = ports["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["name"], p["device"], p["min_bps"]]))
        .collect();
    let (_, vols) = d.call("GET", "/v1/volumes?tenant=acme", admin, None);
    let mut vols: Vec<String> = vols["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    vols.sort();
    let (_, jobs) = d.call("GET", "/v1/jobs?tenant=acme", admin, None);
    let jobs: Vec<Value> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| json!([j["name"], j["state"]]))
        .collect();
    let (_, t) = d.call("GET", "/v1/tenants/acme", admin, None);
    json!({"ports": ports, "volumes": vols, "jobs": jobs, "usage": t["usage"]})
}

fn tap_exists(dev: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(dev).exists()
}

#[test]
fn a_job_slice_is_made_shown_and_deleted_with_the_job() {
    let (_dir, d, admin, acme) = slice_setup(&[]);
    let before = slice_state(&d, &admin, &acme);
    let (s, j) = d.call("POST", "/v1/jobs", &acme, Some(slice_job("train", 4)));
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["state"], "running");
    let slice = &j["slice"];
    assert_eq!(slice["state"], "ready", "{j}");
    assert_eq!(
        (slice["network"].as_str(), slice["subnet"].as_str()),
        (Some("vpc"), Some("web"))
    );
    let ports = slice["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{slice}");
    assert_eq!(ports[0]["name"], "job-train");
    assert_eq!(ports[0]["node"], "gpu-1");
    assert_eq!(ports[0]["min_bps"], 10_000_000_000u64);
    let dev = ports[0]["device"].as_str().unwrap().to_string();
    assert!(tap_exists(&dev), "the port's TAP {dev} is on the host");
    // The port is a network port like any other, with the job's guarantee.
    let (s, p) = d.call(
        "GET",
        &format!("/v1/network-ports/{}", s_of(&ports[0]["id"])),
        &acme,
        None,
    );
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["min_bps"].as_u64(), p["device"].as_str()),
        (Some(10_000_000_000), Some(dev.as_str()))
    );
    let vols: Vec<&str> = slice["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vols, ["data-shard0", "data-shard1"]);
    let after = slice_state(&d, &admin, &acme);
    assert_eq!(
        after["usage"]["ports"],
        before["usage"]["ports"].as_u64().unwrap() + 1
    );
    assert_eq!(
        after["usage"]["volumes"],
        before["usage"]["volumes"].as_u64().unwrap() + 2
    );
    assert_eq!(after["usage"]["gpus"], 4);
    assert_eq!(
        after["volumes"],
        json!(["data-shard0", "data-shard1", "shard0", "shard1"])
    );

    // `job show` lists the slice: the TAP to plug and the volumes.
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &acme,
            "job",
            "show",
            "train",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("port job-train on gpu-1: TAP {dev}")),
        "{text}"
    );
    assert!(text.contains("volume data-shard0 ("), "{text}");
    assert!(text.contains("not attached"), "{text}");

    // An attached clone keeps the job (and all its slice) until it is detached.
    let vid = s_of(&slice["volumes"][0]["id"]);
    let (s, a) = d.call(
        "POST",
        &format!("/v1/volumes/{vid}/attachments"),
        &acme,
        Some(json!({})),
    );
    assert_eq!(s, 201, "{a}");
    let (_, shown) = d.call("GET", "/v1/jobs/train", &acme, None);
    assert_eq!(shown["slice"]["volumes"][0]["uri"], a["uri"], "{shown}");
    let (s, v) = d.call("DELETE", "/v1/jobs/train", &acme, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_attached")),
        "{v}"
    );
    assert_eq!(
        slice_state(&d, &admin, &acme),
        after,
        "a refused delete changed something"
    );
    let (s, _) = d.call(
        "DELETE",
        &format!("/v1/volumes/{vid}/attachments"),
        &acme,
        None,
    );
    assert_eq!(s, 204);

    let (s, v) = d.call("DELETE", "/v1/jobs/train", &acme, None);
    assert_eq!(s, 204, "{v}");
    assert_eq!(
        slice_state(&d, &admin, &acme),
        before,
        "the delete left something"
    );
    assert!(!tap_exists(&dev), "the port's TAP {dev} is gone");
}

fn s_of(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

/// Every step failed in turn (the test-only fault point, one daemon each): the create answers
/// that step's error and every count is what it was. `port#2` fails a spanning job's second
/// port, after the first port and its guarantee were made; `clone#2` the second clone.
#[test]
fn a_failure_at_every_step_leaves_nothing_behind() {
    for (fault, gpus) in [
        ("record", 4),
        ("port", 4),
        ("guarantee", 4),
        ("clone", 4),
        ("clone#2", 4),
        ("port#2", 12),
    ] {
        let (_dir, d, admin, acme) = slice_setup(&[("STRATA_TEST_JOB_SLICE_FAIL", fault)]);
        let before = slice_state(&d, &admin, &acme);
        let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(slice_job("train", gpus)));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (500, Some("internal")),
            "{fault}: {v}"
        );
        let (kind, nth) = fault.split_once('#').unwrap_or((fault, "1"));
        let want = format!("injected fault: job slice step {kind} #{nth}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(&want),
            "{fault}: {v}"
        );
        assert_eq!(
            slice_state(&d, &admin, &acme),
            before,
            "{fault} left something"
        );
    }
}

/// Failures that are not injected: a guarantee the network's cap cannot hold (the port made
/// for it is undone), and a clone name already taken (refused at create).
#[test]
fn a_slice_the_network_or_the_names_refuse_leaves_nothing_behind() {
    let (_dir, d, admin, acme) = slice_setup(&[]);
    let before = slice_state(&d, &admin, &acme);
    let mut big = slice_job("train", 4);
    big["bandwidth_bps"] = json!(200_000_000_000u64);
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(big.clone()));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("network_spec_conflict")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("cap"),
        "{v}"
    );
    assert_eq!(slice_state(&d, &admin, &acme), before);
    // A dry run says the same, and makes nothing either.
    let (s, v) = d.call("POST", "/v1/plans", &acme, Some(big));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("network_spec_conflict")),
        "{v}"
    );
    let (s, _) = d.call(
        "POST",
        "/v1/volumes",
        &acme,
        Some(json!({"name": "data-shard1", "size": "8M"})),
    );
    assert_eq!(s, 201);
    let before = slice_state(&d, &admin, &acme);
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(slice_job("train", 4)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("volume_exists")),
        "{v}"
    );
    assert_eq!(slice_state(&d, &admin, &acme), before);
    // Two entries that would make one volume.
    let mut twice = slice_job("train", 4);
    twice["volumes"] =
        json!([{"name": "x", "clone_group": "ckpt"}, {"name": "x", "clone_group": "ckpt"}]);
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(twice));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("job_spec_conflict")),
        "{v}"
    );
    let mut nonet = slice_job("train", 4);
    nonet["network"] = Value::Null;
    let (s, v) = d.call("POST", "/v1/jobs", &acme, Some(nonet));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("network_spec_conflict")),
        "{v}"
    );
    assert_eq!(slice_state(&d, &admin, &acme), before);
}

#[test]
fn a_dry_run_of_a_slice_says_what_it_would_make_and_makes_nothing() {
    let (_dir, d, admin, acme) = slice_setup(&[]);
    let before = slice_state(&d, &admin, &acme);
    let (s, p) = d.call("POST", "/v1/plans", &acme, Some(slice_job("big", 12)));
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["fits"], true, "{p}");
    let slice = &p["slice"];
    assert_eq!(slice["state"], "planned");
    let ports: Vec<(&str, &str, u64)> = slice["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            assert!(x["device"].is_null(), "nothing is made: {x}");
            (
                x["name"].as_str().unwrap(),
                x["node"].as_str().unwrap(),
                x["min_bps"].as_u64().unwrap(),
            )
        })
        .collect();
    // Each part guaranteed its share of the job's bandwidth (in proportion to its GPUs).
    assert_eq!(
        ports,
        [
            ("job-big-0", "gpu-1", 6_666_666_667),
            ("job-big-1", "gpu-2", 3_333_333_334)
        ]
    );
    assert_eq!(slice["volumes"].as_array().unwrap().len(), 2);
    assert!(slice["volumes"][0]["id"].is_null());
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &acme,
            "job",
            "create",
            "big",
            "--gpus",
            "4",
            "--gpu-model",
            "H200",
            "--cpu",
            "4",
            "--memory",
            "1G",
            "--same-island",
            "--bandwidth",
            "10G",
            "--network",
            "vpc",
            "--subnet",
            "web",
            "--volume",
            "data=clone:ckpt",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would start now") && text.contains("port job-big on gpu-1"),
        "{text}"
    );
    assert!(text.contains("volume data-shard0"), "{text}");
    assert_eq!(
        slice_state(&d, &admin, &acme),
        before,
        "a dry run made something"
    );
}

#[test]
fn a_spanning_job_gets_a_port_per_part_from_the_cli() {
    let (_dir, d, admin, acme) = slice_setup(&[]);
    let before = slice_state(&d, &admin, &acme);
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &acme,
            "job",
            "create",
            "wide",
            "--gpus",
            "12",
            "--gpu-model",
            "H200",
            "--cpu",
            "4",
            "--memory",
            "1G",
            "--same-label",
            "rack",
            "--bandwidth",
            "10G",
            "--network",
            "vpc",
            "--port-cap",
            "50G",
            "--volume",
            "clone:ckpt",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports = v["slice"]["ports"].as_array().unwrap();
    let names: Vec<&str> = ports.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["job-wide-0", "job-wide-1"], "{v}");
    assert!(
        ports.iter().all(|p| p["cap_bps"] == 50_000_000_000u64),
        "{v}"
    );
    assert!(ports
        .iter()
        .all(|p| tap_exists(p["device"].as_str().unwrap())));
    // `clone:GROUP` names the clones after the job; the subnet was the network's only one.
    let vols: Vec<&str> = v["slice"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(vols, ["wide-shard0", "wide-shard1"]);
    let (s, _) = d.call("DELETE", "/v1/jobs/wide", &acme, None);
    assert_eq!(s, 204);
    assert_eq!(slice_state(&d, &admin, &acme), before);
}

/// A queued job's slice is made when it is admitted; a slice that fails at admission leaves
/// the job waiting with the reason (the call that admitted it succeeds) and nothing made,
/// and the next admission makes it once the network allows.
#[test]
fn a_queued_job_gets_its_slice_at_admission_or_waits_with_the_reason() {
    let (_dir, d, admin, acme) = slice_setup(&[]);
    for n in ["gpu-1", "gpu-2"] {
        let (s, _) = d.call("POST", &format!("/v1/nodes/{n}/cordon"), &admin, None);
        assert_eq!(s, 200);
    }
    let before = slice_state(&d, &admin, &acme);
    let (s, j) = d.call("POST", "/v1/jobs", &acme, Some(slice_job("later", 4)));
    assert_eq!((s, j["state"].as_str()), (201, Some("pending")), "{j}");
    assert_eq!(j["slice"]["state"], "waiting", "{j}");
    let queued = slice_state(&d, &admin, &acme);
    assert_eq!(
        queued["ports"], before["ports"],
        "a queued job holds no port"
    );
    assert_eq!(queued["volumes"], before["volumes"], "nor volumes");
    // Admission fails the slice: the guarantee does not fit the cap any more.
    let (s, v) = d.call(
        "PUT",
        "/v1/networks/vpc/bandwidth",
        &acme,
        Some(json!({"cap_bps": 1_000_000_000u64})),
    );
    assert_eq!(s, 200, "{v}");
    let (s, _) = d.call("POST", "/v1/nodes/gpu-1/uncordon", &admin, None);
    assert_eq!(s, 200, "the call that admitted the job succeeds");
    let (_, j) = d.call("GET", "/v1/jobs/later", &acme, None);
    assert_eq!(j["state"], "pending", "{j}");
    assert_eq!(j["explanation"]["binding"], json!(["slice"]), "{j}");
    assert!(
        j["explanation"]["message"]
            .as_str()
            .unwrap()
            .contains("cap"),
        "{j}"
    );
    assert_eq!(
        slice_state(&d, &admin, &acme),
        queued,
        "the failed slice left something"
    );
    // Room in the cap, and the next admission makes it.
    let (s, _) = d.call(
        "PUT",
        "/v1/networks/vpc/bandwidth",
        &acme,
        Some(json!({"cap_bps": 100_000_000_000u64})),
    );
    assert_eq!(s, 200);
    let (s, _) = d.call("POST", "/v1/nodes/gpu-2/uncordon", &admin, None);
    assert_eq!(s, 200);
    let (_, j) = d.call("GET", "/v1/jobs/later", &acme, None);
    assert_eq!(
        (j["state"].as_str(), j["slice"]["state"].as_str()),
        (Some("running"), Some("ready")),
        "{j}"
    );
    assert_eq!(j["slice"]["ports"][0]["name"], "job-later");
}

#[test]
fn another_tenant_cannot_name_your_network_or_group() {
    let (_dir, d, _admin, acme) = slice_setup(&[]);
    let beta = token(&d, "beta", "member");
    let (_, net) = d.call("GET", "/v1/networks/vpc", &acme, None);
    let (_, groups) = d.call("GET", "/v1/snapshot-groups", &acme, None);
    let gid = s_of(&groups["items"][0]["id"]);
    for network in ["vpc".to_string(), s_of(&net["id"])] {
        let mut j = slice_job("spy", 1);
        j["network"] = json!(network);
        j["volumes"] = json!([]);
        let (s, v) = d.call("POST", "/v1/jobs", &beta, Some(j));
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (409, Some("reference_not_found"), Some("network")),
            "{v}"
        );
    }
    for group in ["ckpt".to_string(), gid] {
        let mut j = slice_job("spy", 1);
        j["network"] = Value::Null;
        j["subnet"] = Value::Null;
        j["volumes"] = json!([{"clone_group": group}]);
        let (s, v) = d.call("POST", "/v1/plans", &beta, Some(j));
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (409, Some("reference_not_found"), Some("volumes")),
            "{v}"
        );
    }
    let (_, jobs) = d.call("GET", "/v1/jobs", &beta, None);
    assert!(jobs["items"].as_array().unwrap().is_empty());
}

/// A crash in the middle of a slice (the fault point aborting the daemon at the second clone)
/// is settled at the next start: the create call's job is gone with all its slice; a job
/// admitted later is queued again and its slice made by the start's own admission.
#[test]
fn a_crash_in_the_middle_of_a_slice_is_settled_at_start() {
    let crash = [("STRATA_TEST_JOB_SLICE_FAIL", "clone#2:crash")];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--node", "local-1"];
    let d = Daemon::start_env(&data, &args, None, &crash);
    let admin = d.admin();
    let acme = slice_objects(&d, &admin);
    let before = slice_state(&d, &admin, &acme);
    let create = |d: &Daemon, name: &str| {
        crate::common::strata()
            .args([
                "--endpoint",
                &d.url,
                "--token",
                &acme,
                "job",
                "create",
                name,
                "--gpus",
                "4",
                "--gpu-model",
                "H200",
                "--cpu",
                "4",
                "--memory",
                "1G",
                "--same-island",
                "--bandwidth",
                "10G",
                "--network",
                "vpc",
                "--volume",
                "data=clone:ckpt",
            ])
            .output()
            .unwrap()
    };
    let out = create(&d, "train");
    assert!(!out.status.success(), "the daemon crashed under the call");
    d.kill9();
    let d = Daemon::start_with(&data, &args);
    assert_eq!(
        slice_state(&d, &admin, &acme),
        before,
        "the interrupted slice left something"
    );

    // A queued job, admitted by an uncordon under the fault: crash, restart, made.
    for n in ["gpu-1", "gpu-2"] {
        d.call("POST", &format!("/v1/nodes/{n}/cordon"), &admin, None);
    }
    let out = create(&d, "later");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    let d = Daemon::start_env(&data, &args, None, &crash);
    let admitted = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &admin,
            "node",
            "uncordon",
            "gpu-1",
        ])
        .output()
        .unwrap();
    assert!(
        !admitted.status.success(),
        "the daemon crashed under the admission"
    );
    d.kill9();
    let d = Daemon::start_with(&data, &args);
    let (_, j) = d.call("GET", "/v1/jobs/later", &acme, None);
    assert_eq!(
        (j["state"].as_str(), j["slice"]["state"].as_str()),
        (Some("running"), Some("ready")),
        "{j}"
    );
    let after = slice_state(&d, &admin, &acme);
    assert_eq!(after["ports"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(
        after["volumes"],
        json!(["data-shard0", "data-shard1", "shard0", "shard1"]),
        "one set of clones, none left from the crash"
    );
}

/// The planner's bandwidth on a node's NIC (from the inventory): a running job's guarantee
/// counts against it, a job whose bandwidth the NIC cannot guarantee beside it waits and says
/// so in Gbit/s, a dry run shows the assignment (guarantee, rate, the NIC and what is
/// guaranteed on it), and the waiting job starts, assigned, when the first one goes.
#[test]
fn job_bandwidth_is_assigned_on_the_nic_and_a_job_it_cannot_hold_waits() {
    const G: u64 = 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(&dir.path().join("data"), &["--node", "local-1"]);
    let admin = d.admin();
    let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "acme"})));
    assert_eq!(s, 201, "{v}");
    let inv = "\
nodes:
  - name: net-1
    cpu: 64
    memory: 1Ti
    nic: 100G
    gpus: [{model: H200, count: 8, memory: 141Gi}]
    islands: [[0,1,2,3],[4,5,6,7]]
";
    let (s, v) = d.call("POST", "/v1/nodes", &admin, Some(json!({"inventory": inv})));
    assert_eq!(s, 201, "{v}");
    // The local node's real NIC is not part of this test.
    let (s, v) = d.call("POST", "/v1/nodes/local-1/cordon", &admin, None);
    assert_eq!(s, 200, "{v}");
    let bw_job = |name: &str, bps: u64| {
        let mut j = job(name, 4);
        j["tenant"] = json!("acme");
        j["bandwidth_bps"] = json!(bps);
        j
    };
    let (s, a) = d.call("POST", "/v1/jobs", &admin, Some(bw_job("a", 60 * G)));
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["state"], "running", "{a}");
    let ba = &a["bandwidth"][0];
    assert_eq!(ba["node"], "net-1", "{a}");
    assert_eq!(ba["guarantee_bps"], json!(60 * G), "{a}");
    assert_eq!(ba["nic_bps"], json!(100 * G), "{a}");
    assert_eq!(ba["nic_guaranteed_bps"], json!(60 * G), "{a}");
    // Alone on the NIC, it may use all of it.
    assert!(
        ba["rate_bps"].as_u64().unwrap().abs_diff(100 * G) < 1000,
        "{a}"
    );
    // 60 more cannot be guaranteed beside it, though 4 GPUs are free.
    let (s, p) = d.call("POST", "/v1/plans", &admin, Some(bw_job("b", 60 * G)));
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["fits"], false, "{p}");
    assert_eq!(p["bandwidth"], json!([]), "{p}");
    assert_eq!(p["explanation"]["binding"], json!(["bandwidth"]), "{p}");
    let msg = p["explanation"]["message"].as_str().unwrap();
    assert!(
        msg.contains("needs 60 Gbit/s bandwidth") && msg.contains("40 Gbit/s"),
        "{msg}"
    );
    let (s, b) = d.call("POST", "/v1/jobs", &admin, Some(bw_job("b", 60 * G)));
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["state"], "pending", "{b}");
    assert_eq!(b["explanation"]["message"].as_str().unwrap(), msg, "{b}");
    assert_eq!(b["bandwidth"], json!([]), "{b}");
    // 30 fits: the dry run shows the assignment beside a's guarantee. (b waits ahead of it
    // but cannot start, so c would.)
    let (s, p) = d.call("POST", "/v1/plans", &admin, Some(bw_job("c", 30 * G)));
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["fits"], true, "{p}");
    let bc = &p["bandwidth"][0];
    assert_eq!(p["bandwidth"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(bc["guarantee_bps"], json!(30 * G), "{p}");
    assert_eq!(bc["nic_guaranteed_bps"], json!(90 * G), "{p}");
    let rate = bc["rate_bps"].as_u64().unwrap();
    assert!((30 * G..=40 * G).contains(&rate), "{p}");
    // The CLI's dry run says it in words.
    let out = crate::common::strata()
        .args([
            "--endpoint",
            &d.url,
            "--token",
            &admin,
            "job",
            "create",
            "c",
            "--tenant",
            "acme",
            "--gpus",
            "4",
            "--gpu-model",
            "H200",
            "--cpu",
            "4",
            "--memory",
            "1G",
            "--same-island",
            "--bandwidth",
            "30G",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("bandwidth on net-1: 30000000000 bit/s guaranteed")
            && text.contains("its NIC 100000000000 bit/s, 90000000000 guaranteed with it"),
        "{text}"
    );
    // a goes: b starts with its bandwidth assigned on the NIC.
    let (s, v) = d.call("DELETE", "/v1/jobs/a?tenant=acme", &admin, None);
    assert!(s == 200 || s == 204, "{s} {v}");
    let (s, b) = d.call("GET", "/v1/jobs/b?tenant=acme", &admin, None);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "running", "{b}");
    assert_eq!(b["bandwidth"][0]["guarantee_bps"], json!(60 * G), "{b}");
    assert_eq!(
        b["bandwidth"][0]["nic_guaranteed_bps"],
        json!(60 * G),
        "{b}"
    );
}
