//! The OpenAPI document against the live daemon, as a fuzzer sees it: schemathesis (from
//! PyPI; `scripts/test` installs it into `target/venv`) drives every documented operation with
//! generated and mutated inputs, as an admin and as a tenant member, and every check must
//! hold: documented status codes, content types and response schemas, invalid input refused,
//! no server errors, deleted resources gone.

use std::path::PathBuf;
use std::process::Command;

use crate::common::Daemon;
use serde_json::json;

/// The schemathesis CLI: `STRATA_SCHEMATHESIS`, else the venv `scripts/test` makes.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/st");
    assert!(
        p.exists(),
        "schemathesis is not installed: run `bash scripts/test` once (it installs it into \
         target/venv), or set STRATA_SCHEMATHESIS"
    );
    p
}

fn run(d: &Daemon, token: &str, seconds: u32) {
    let o = Command::new(schemathesis())
        .arg("run")
        .arg(format!("{}/v1/openapi.json", d.url))
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-time", &seconds.to_string()])
        // One worker: CPython 3.11 can fail `ast.parse` when two threads run it at once
        // ("AST constructor recursion depth mismatch", hypothesis describing a filter), which
        // schemathesis reports as an error of whichever operation it was generating.
        .args(["--workers", "1"])
        .args(["--seed", "1"])
        .args(["--request-timeout", "20"])
        .env("NO_COLOR", "1")
        .output()
        .expect("running schemathesis");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "schemathesis found failures:\n{out}\n{}\nthe daemon's last warnings and errors:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.warnings()
    );
}

#[test]
fn schemathesis_finds_the_document_true_as_admin_and_as_member() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "fuzz"})));
    let (_, t) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "fuzz", "role": "member"})),
    );
    let member = t["token"].as_str().unwrap().to_string();
    run(&d, &admin, 90);
    run(&d, &member, 60);
    d.stop();
}
