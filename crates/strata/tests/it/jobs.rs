//! Placement against the real daemon: declared hypothetical nodes, jobs placed or queued with
//! the engine's explanation, the GPU quota, dry runs that change nothing, admission when a job
//! is deleted, tenant scoping, stale plans; and the local node's GPUs where nvidia-smi exists.

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

fn token(d: &Daemon, tenant: &str, role: &str) -> String {
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
