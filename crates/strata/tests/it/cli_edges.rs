//! The CLI's rough edges a new user hit (issue 16), each against a live daemon: partial quota
//! and QoS updates, the audit log's order and filters, finding the daemon (bare host:port,
//! the CLI config, `strata login`, errors that say what to do), the request timeout, the
//! default tenant, request-id reuse, a failed first start, listing an unknown tenant, a
//! broken pipe, exports of volumes and snapshots by name, imports that leave the volume as
//! they found it, help text, and progress bars only on a terminal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

/// One run of the CLI.
struct Run {
    ok: bool,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("{e}: {}", self.out))
    }
}

/// The CLI against `d`'s endpoint with `token` (None: none given), its config at `config`.
fn cli(d: &Daemon, token: Option<&str>, args: &[&str]) -> Run {
    let mut c = strata();
    c.args(args).arg("--endpoint").arg(&d.url);
    if let Some(t) = token {
        c.env("STRATA_TOKEN", t);
    }
    // Not the daemon's own config (which holds the admin token): what the flags say only.
    c.env("STRATA_CONFIG", d.data.with_extension("other-config.yaml"));
    run(c)
}

fn run(mut c: std::process::Command) -> Run {
    let o = c.output().unwrap();
    Run {
        ok: o.status.success(),
        out: String::from_utf8_lossy(&o.stdout).to_string(),
        err: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

#[test]
fn set_quota_and_set_qos_change_only_the_limits_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let a = d.admin();
    let a = Some(a.as_str());
    let r = cli(
        &d,
        a,
        &[
            "tenant",
            "create",
            "ml",
            "--capacity",
            "1T",
            "--max-volumes",
            "5",
        ],
    );
    assert!(r.ok, "{}", r.err);
    let r = cli(
        &d,
        a,
        &[
            "tenant",
            "set-quota",
            "ml",
            "--max-iops",
            "50",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    assert_eq!(
        r.json()["quota"],
        json!({"capacity_bytes": 1u64 << 40, "volumes": 5, "snapshots": null, "iops": 50, "gpus": null, "networks": null, "ports": null, "snapshot_schedules": null})
    );
    // `unlimited` removes one limit; the others stay.
    let r = cli(
        &d,
        a,
        &[
            "tenant",
            "set-quota",
            "ml",
            "--capacity",
            "unlimited",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    assert_eq!(
        r.json()["quota"],
        json!({"capacity_bytes": null, "volumes": 5, "snapshots": null, "iops": 50, "gpus": null, "networks": null, "ports": null, "snapshot_schedules": null})
    );
    // Nothing named: refused, nothing sent.
    let r = cli(&d, a, &["tenant", "set-quota", "ml"]);
    assert!(!r.ok && r.err.contains("at least one limit"), "{}", r.err);
    // The API's PUT still replaces the whole quota (compatible).
    let (s, v) = d.call(
        "PUT",
        "/v1/tenants/ml/quota",
        d.admin().as_str(),
        Some(json!({"volumes": 7})),
    );
    assert_eq!((s, &v["quota"]["iops"]), (200, &Value::Null), "{v}");

    let r = cli(
        &d,
        a,
        &[
            "volume",
            "create",
            "v",
            "--size",
            "1G",
            "--tenant",
            "ml",
            "--iops-limit",
            "40",
        ],
    );
    assert!(r.ok, "{}", r.err);
    let r = cli(
        &d,
        a,
        &[
            "volume",
            "set-qos",
            "v",
            "--bandwidth-limit",
            "200M",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    let q = &r.json()["qos"];
    assert_eq!(
        (&q["iops_limit"], &q["bandwidth_limit"]),
        (&json!(40), &json!(200u64 << 20)),
        "{q}"
    );
    let r = cli(
        &d,
        a,
        &[
            "volume",
            "set-qos",
            "v",
            "--iops-limit",
            "none",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    let q = &r.json()["qos"];
    assert_eq!(
        (&q["iops_limit"], &q["bandwidth_limit"]),
        (&Value::Null, &json!(200u64 << 20)),
        "{q}"
    );
    let help = cli(&d, None, &["volume", "set-qos", "--help"]);
    assert!(
        help.out.contains("Only the limits named change"),
        "{}",
        help.out
    );
    d.stop();
}

#[test]
fn audit_is_newest_first_with_limit_since_and_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let a = d.admin();
    let a = Some(a.as_str());
    assert!(cli(&d, a, &["tenant", "create", "ml"]).ok);
    assert!(
        cli(
            &d,
            a,
            &["volume", "create", "old", "--size", "1G", "--tenant", "ml"]
        )
        .ok
    );
    std::thread::sleep(Duration::from_millis(3100));
    assert!(
        cli(
            &d,
            a,
            &["volume", "create", "new", "--size", "1G", "--tenant", "ml"]
        )
        .ok
    );
    assert!(cli(&d, a, &["volume", "delete", "old", "--tenant", "ml"]).ok);
    let r = cli(&d, a, &["audit", "--limit", "2", "-o", "json"]);
    assert!(r.ok, "{}", r.err);
    let items = r.json()["items"].as_array().unwrap().clone();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["volume.delete", "volume.create"], "{items:?}");
    // An admin's changes name the tenant they acted on, a delete's too.
    assert!(items.iter().all(|e| e["tenant"] == "ml"), "{items:?}");
    assert!(items[0]["time"].as_u64() >= items[1]["time"].as_u64());
    let r = cli(&d, a, &["audit", "--since", "2s", "-o", "json"]);
    assert!(r.ok, "{}", r.err);
    let resources: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["action"], e["resource"]))
        .collect();
    assert!(
        resources.iter().any(|e| e.contains("\"new\"")),
        "{resources:?}"
    );
    assert!(
        !resources.iter().any(|e| e.contains("\"old\"")),
        "{resources:?}"
    );
    let r = cli(
        &d,
        a,
        &["audit", "--since", "2000-01-01T00:00:00Z", "-o", "json"],
    );
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 4, "{}", r.out);
    let r = cli(&d, a, &["audit", "--since", "yesterday"]);
    assert!(!r.ok && r.err.contains("RFC 3339"), "{}", r.err);
    // Readable times: `YYYY-MM-DD HH:MM:SS` in the table.
    let r = cli(&d, a, &["audit", "--limit", "1"]);
    let row = r.out.lines().nth(1).unwrap_or_default().to_string();
    let t = row.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert!(
        t.len() == 19 && t.as_bytes()[4] == b'-' && t.as_bytes()[13] == b':',
        "{}",
        r.out
    );
    d.stop();
}

#[test]
fn the_cli_finds_the_daemon_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let admin = d.admin();
    // The first start saved the endpoint and admin token in the CLI config, private.
    let cfg = data.with_extension("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(&d.url) && text.contains(&admin), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // From another directory, with neither flags nor ./strata-data: the config finds it.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let bare = |cfg: &Path, args: &[&str]| {
        let mut c = strata();
        c.args(args)
            .current_dir(&elsewhere)
            .env("STRATA_CONFIG", cfg)
            .env_remove("STRATA_TOKEN")
            .env_remove("STRATA_ENDPOINT");
        run(c)
    };
    let r = bare(&cfg, &["tenant", "list"]);
    assert!(r.ok && r.out.contains("default"), "{}", r.err);
    // A bare host:port is an endpoint.
    let hostport = d.url.trim_start_matches("http://").to_string();
    let r = bare(&cfg, &["--endpoint", &hostport, "tenant", "list"]);
    assert!(r.ok, "{}", r.err);

    // `strata login` checks the token, then saves it; a bad token saves nothing.
    let (_, t) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"tenant": "default", "role": "member"})),
    );
    let member = t["token"].as_str().unwrap();
    let mine = dir.path().join("home/.config/strata/config.yaml");
    let r = bare(
        &mine,
        &["login", "--endpoint", &hostport, "--token", "st_bogus"],
    );
    assert!(!r.ok && r.err.contains("HTTP 401"), "{}", r.err);
    assert!(!mine.exists());
    let r = bare(
        &mine,
        &["login", "--endpoint", &hostport, "--token", member],
    );
    assert!(r.ok, "{}", r.err);
    let mode = std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(bare(&mine, &["volume", "create", "v", "--size", "1G"]).ok);
    let r = bare(&mine, &["tenant", "create", "x"]);
    assert!(!r.ok && r.err.contains("forbidden"), "{}", r.err);
    // XDG_CONFIG_HOME and HOME are where the config lives when STRATA_CONFIG is not set.
    let mut c = strata();
    c.args(["volume", "list", "-o", "json"])
        .current_dir(&elsewhere)
        .env_remove("STRATA_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", dir.path().join("home"));
    let r = run(c);
    assert!(
        r.ok && r.json()["items"][0]["name"] == "v",
        "{}{}",
        r.out,
        r.err
    );

    // Errors say what to do.
    let r = bare(&mine, &["--endpoint", "127.0.0.1:1", "volume", "list"]);
    assert!(
        !r.ok && r.err.contains("is `strata serve` running?"),
        "{}",
        r.err
    );
    let r = bare(
        &mine,
        &[
            "--endpoint",
            &hostport,
            "--token",
            "st_bogus",
            "volume",
            "list",
        ],
    );
    assert!(!r.ok && r.err.contains("strata login"), "{}", r.err);
    let r = bare(&cfg, &["--endpoint", "ftp://x", "volume", "list"]);
    assert!(!r.ok && r.err.contains("not http or https"), "{}", r.err);
    d.stop();
}

#[test]
fn a_request_gives_up_after_the_timeout() {
    // A listener that accepts and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    let mut c = strata();
    c.args([
        "volume",
        "list",
        "--timeout",
        "1s",
        "--token",
        "t",
        "--endpoint",
        &addr,
    ]);
    let start = Instant::now();
    let r = run(c);
    let took = start.elapsed();
    assert!(!r.ok && r.err.contains("timeout"), "{}", r.err);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let r = run({
        let mut c = strata();
        c.args(["volume", "list", "--timeout", "soon"]);
        c
    });
    assert!(!r.ok && r.err.contains("--timeout"), "{}", r.err);
}

#[test]
fn an_admin_creates_in_the_default_tenant_and_request_ids_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let a = d.admin();
    let a = Some(a.as_str());
    let r = cli(
        &d,
        a,
        &[
            "volume",
            "create",
            "v",
            "--size",
            "1G",
            "--request-id",
            "r1",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    let v = r.json();
    assert_eq!(v["tenant"], "default");
    // The same request again: the same volume.
    let r = cli(
        &d,
        a,
        &[
            "volume",
            "create",
            "v",
            "--size",
            "1G",
            "--request-id",
            "r1",
            "-o",
            "json",
        ],
    );
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.json()["id"], v["id"]);
    // The same id with another name: a conflict, not the earlier volume.
    let r = cli(
        &d,
        a,
        &[
            "volume",
            "create",
            "w",
            "--size",
            "1G",
            "--request-id",
            "r1",
        ],
    );
    assert!(
        !r.ok && r.err.contains("request_id_reused") && r.err.contains("409"),
        "{}",
        r.err
    );
    let (s, body) = d.call(
        "POST",
        "/v1/volumes",
        d.admin().as_str(),
        Some(json!({"name": "w", "size": "1G", "request_id": "r1"})),
    );
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("request_id_reused"))
    );
    let r = cli(&d, a, &["volume", "list", "-o", "json"]);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1, "{}", r.out);
    // An unknown tenant is not found, not an empty list.
    let r = cli(&d, a, &["volume", "list", "--tenant", "nosuch"]);
    assert!(
        !r.ok && r.err.contains("tenant_not_found"),
        "{}{}",
        r.out,
        r.err
    );
    d.stop();
}

#[test]
fn a_failed_first_start_leaves_nothing_and_a_later_start_works() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |data: &Path, size: &str| {
        let mut c = strata();
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--default-pool-size",
            size,
            "--data-dir",
        ])
        .arg(data)
        .env("STRATA_CONFIG", dir.path().join("config.yaml"));
        run(c)
    };
    let data: PathBuf = dir.path().join("d");
    for size in ["0", "1M"] {
        let r = serve(&data, size);
        assert!(!r.ok && r.err.contains("too small"), "{}", r.err);
        assert!(
            !data.exists(),
            "a failed first start left {}",
            data.display()
        );
    }
    // A dir made by hand stays, empty.
    std::fs::create_dir(&data).unwrap();
    let r = serve(&data, "0");
    assert!(!r.ok);
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    assert!(!dir.path().join("config.yaml").exists());
    let d = Daemon::start(&data);
    let (s, _) = d.call("GET", "/v1/pools", &d.admin(), None);
    assert_eq!(s, 200);
    d.stop();
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::process::Stdio;
    let mut c = strata();
    let mut child = c
        .args(["completion", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first byte is written.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(o.status.code(), Some(141));
}

/// Completion names the daemon's objects (rough edge 14): the script `strata completion
/// bash` prints, sourced in a real bash, completes `volume show <TAB>` with the volumes the
/// caller sees and `volume create <TAB>` with none; without a daemon a TAB prints nothing.
#[test]
fn bash_completion_names_the_daemons_objects() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let a = d.admin();
    for v in ["ckpt-a", "ckpt-b", "other"] {
        assert!(cli(&d, Some(&a), &["volume", "create", v, "--size", "1M"]).ok);
    }
    assert!(cli(&d, Some(&a), &["snapshot", "create", "ckpt-a", "s1"]).ok);
    let bin = Path::new(env!("CARGO_BIN_EXE_strata"))
        .parent()
        .unwrap()
        .to_path_buf();
    let complete = |line: &str, endpoint: &str| -> String {
        // COMP_WORDS as bash splits the line, the cursor on the last (maybe empty) word.
        let script = format!(
            "source <(strata completion bash)\n\
             read -ra COMP_WORDS <<< \"{line}\"\n\
             [[ \"{line}\" == *' ' ]] && COMP_WORDS+=('')\n\
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             COMP_LINE=\"{line}\"; COMP_POINT=${{#COMP_LINE}}\n\
             _strata_with_names strata \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
        );
        let o = std::process::Command::new("bash")
            .args(["-c", &script])
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("STRATA_ENDPOINT", endpoint)
            .env("STRATA_TOKEN", &a)
            .env("STRATA_CONFIG", d.data.with_extension("other-config.yaml"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let names = |out: &str| -> Vec<String> {
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&complete("strata volume show ck", &d.url)),
        ["ckpt-a", "ckpt-b"]
    );
    let all = names(&complete("strata volume show ", &d.url));
    for v in ["ckpt-a", "ckpt-b", "other"] {
        assert!(all.contains(&v.to_string()), "{all:?}");
    }
    assert!(
        names(&complete("strata volume clone ", &d.url)).contains(&"ckpt-a@s1".to_string()),
        "snapshots complete as VOLUME@NAME"
    );
    // A new name is not completed from the daemon.
    let fresh = names(&complete("strata volume create ", &d.url));
    assert!(!fresh.iter().any(|n| n.starts_with("ckpt")), "{fresh:?}");
    // No daemon there: nothing, and no error in the user's line.
    let gone = complete("strata volume show ", "127.0.0.1:9");
    assert!(!gone.contains("ckpt"), "{gone}");
    let quiet = strata()
        .args(["__complete", "--", "volume", "show"])
        .env("STRATA_ENDPOINT", "127.0.0.1:9")
        .env("STRATA_CONFIG", d.data.with_extension("other-config.yaml"))
        .output()
        .unwrap();
    assert!(
        quiet.status.success() && quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
}

#[test]
fn a_second_switch_vxlan_port_on_the_same_address_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let a = d.admin();
    let a = Some(a.as_str());
    // A UDP port nobody holds now.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    for sw in ["s1", "s2"] {
        assert!(cli(&d, a, &["switch", "create", sw]).ok);
    }
    let vx = |sw: &str, remote: &str| {
        cli(
            &d,
            a,
            &[
                "switch",
                "add-vxlan",
                sw,
                "vx",
                "--remote",
                remote,
                "--local",
                "127.0.0.1",
                "--dstport",
                &port,
            ],
        )
    };
    let r = vx("s1", "127.0.0.2");
    assert!(r.ok, "{}", r.err);
    let r = vx("s2", "127.0.0.3");
    assert!(
        !r.ok && r.err.contains("HTTP 409") && r.err.contains("port_address_unavailable"),
        "{}",
        r.err
    );
    d.stop();
}

/// Point 10: `pool show` lists the pool's devices, as its help promises.
#[test]
fn pool_show_lists_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let r = cli(&d, Some(&admin), &["pool", "show", "default"]);
    assert!(r.ok, "{}", r.err);
    let dev = d.data.join("pools/default/dev0.img");
    assert!(
        r.out.contains("DEVICE") && r.out.contains(&dev.display().to_string()),
        "{}",
        r.out
    );
    assert!(r.out.contains("ssd"), "{}", r.out);
    let j = cli(&d, Some(&admin), &["pool", "show", "default", "-o", "json"]).json();
    assert_eq!(j["devices"][0]["path"], dev.display().to_string().as_str());
}

/// Point 3, found again by hand: a config saved by another daemon (a temporary one on an
/// ephemeral port, long gone) must not send the CLI away from the daemon beside it. The data
/// dir records its daemon's endpoint (`DIR/endpoint`, 0600), and the CLI run in the dir that
/// holds `./strata-data` goes there, with that dir's admin token.
#[test]
fn the_daemon_beside_the_cli_wins_over_a_stale_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("strata-data"));
    let rec = d.data.join("endpoint");
    assert_eq!(std::fs::read_to_string(&rec).unwrap().trim(), d.url);
    assert_eq!(
        std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stale = dir.path().join("stale-config.yaml");
    std::fs::write(&stale, "endpoint: http://127.0.0.1:9\ntoken: not-a-token\n").unwrap();
    let mut c = strata();
    c.args(["volume", "list"])
        .current_dir(dir.path())
        .env("STRATA_CONFIG", &stale)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ENDPOINT");
    let r = run(c);
    assert!(r.ok, "{}", r.err);
    // Elsewhere, the config still decides (and here it names a dead daemon).
    let mut c = strata();
    c.args(["volume", "list"])
        .current_dir(std::env::temp_dir())
        .env("STRATA_CONFIG", &stale)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ENDPOINT");
    let r = run(c);
    assert!(!r.ok && r.err.contains("127.0.0.1:9"), "{}", r.err);
}

/// Point 6: a volume and a snapshot (by its name) export to a local file over NBD, with the
/// bytes they hold; a snapshot unknown by name is refused with its code. Names work where ids
/// do: clone, rollback and delete take the snapshot's name.
#[test]
fn volumes_and_snapshots_by_name_export_to_a_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let ok = |args: &[&str]| {
        let r = cli(&d, Some(&admin), args);
        assert!(r.ok, "{args:?}: {}", r.err);
        r
    };
    ok(&["volume", "create", "data", "--size", "8M"]);
    // 8 MiB: the first 1 MiB of 0xab, then zeros, then 1 MiB of 0xcd at 6 MiB.
    let mut image = vec![0u8; 8 << 20];
    image[..1 << 20].fill(0xab);
    image[6 << 20..7 << 20].fill(0xcd);
    let src = dir.path().join("src.img");
    std::fs::write(&src, &image).unwrap();
    ok(&["volume", "import", "data", src.to_str().unwrap(), "--quiet"]);
    ok(&["snapshot", "create", "data", "before"]);
    // The volume changes after the snapshot: the snapshot keeps the old bytes.
    let mut changed = image.clone();
    changed[..1 << 20].fill(0x11);
    let src2 = dir.path().join("src2.img");
    std::fs::write(&src2, &changed).unwrap();
    ok(&[
        "volume",
        "import",
        "data",
        src2.to_str().unwrap(),
        "--quiet",
    ]);

    let vol_out = dir.path().join("vol.img");
    let r = ok(&["volume", "export", "data", vol_out.to_str().unwrap()]);
    assert!(r.out.contains("exported data"), "{}", r.out);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&vol_out).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "an exported volume is private whatever the umask"
        );
    }
    assert!(std::fs::read(&vol_out).unwrap() == changed);
    let snap_out = dir.path().join("snap.img");
    ok(&[
        "volume",
        "export",
        "data@before",
        snap_out.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&snap_out).unwrap() == image);
    let snap_out2 = dir.path().join("snap2.img");
    ok(&[
        "snapshot",
        "export",
        "data@before",
        snap_out2.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(std::fs::read(&snap_out2).unwrap() == image);
    // Sparse: the zeros were not written.
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&snap_out).unwrap().blocks() * 512;
    assert!(blocks < 4 << 20, "{blocks} bytes allocated of 8 MiB");
    // Export left the volume detached, as it found it.
    let a = ok(&["volume", "attachments", "-o", "json"]).json();
    assert!(a["items"].as_array().unwrap().is_empty(), "{a}");
    let r = cli(
        &d,
        Some(&admin),
        &["volume", "export", "data@nosuch", "/tmp/x.img"],
    );
    assert!(!r.ok && r.err.contains("snapshot_not_found"), "{}", r.err);
    // Names where ids work: clone, rollback, delete.
    ok(&["volume", "clone", "data@before", "copy"]);
    ok(&["volume", "rollback", "data", "before"]);
    let back = dir.path().join("back.img");
    ok(&[
        "volume",
        "export",
        "data",
        back.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(std::fs::read(&back).unwrap() == image);
    ok(&["volume", "delete", "copy"]);
    ok(&["snapshot", "delete", "data", "before"]);
}

/// Point 11: `volume import` leaves a detached volume detached (and an attached one
/// attached), and `volume attachments` lists what is attached.
#[test]
fn import_leaves_the_volume_as_it_found_it_and_attachments_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let ok = |args: &[&str]| {
        let r = cli(&d, Some(&admin), args);
        assert!(r.ok, "{args:?}: {}", r.err);
        r
    };
    ok(&["volume", "create", "a", "--size", "4M"]);
    ok(&["volume", "create", "b", "--size", "4M"]);
    let src = dir.path().join("src.img");
    std::fs::write(&src, vec![1u8; 1 << 20]).unwrap();
    ok(&["volume", "import", "a", src.to_str().unwrap(), "--quiet"]);
    let list = ok(&["volume", "attachments", "-o", "json"]).json();
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    let uri = ok(&["volume", "attach", "b"]).out;
    assert!(uri.starts_with("nbd+unix://"), "{uri}");
    ok(&["volume", "import", "b", src.to_str().unwrap(), "--quiet"]);
    let list = ok(&["volume", "attachments", "-o", "json"]).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let table = ok(&["volume", "attachments"]).out;
    assert!(table.contains("nbd+unix://"), "{table}");
}

/// Point 15: the flags the report named show their help text (the unit test
/// `every_command_and_argument_has_help` walks the whole tree).
#[test]
fn the_flags_named_in_the_report_have_help_text() {
    for (cmd, flag) in [
        (&["volume", "create"][..], "--tenant"),
        (&["volume", "delete"][..], "--force"),
        (&["tenant", "set-quota"][..], "--max-iops"),
        (&["tenant", "set-quota"][..], "--capacity"),
        (&["switch", "add-vxlan"][..], "--remote"),
        (&["switch", "add-vxlan"][..], "--dstport"),
        (&["events"][..], "--follow"),
        (&["volume", "export"][..], "--quiet"),
    ] {
        let o = strata().args(cmd).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        let line = help
            .lines()
            .skip_while(|l| {
                let l = l.trim_start();
                // `--flag <V>` or `-f, --flag`: an option's own line, not prose naming it.
                !(l.starts_with(flag) || (l.starts_with('-') && l.contains(&format!(", {flag}"))))
            })
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let text = line.split_once(flag).map_or("", |(_, r)| r);
        assert!(
            text.split_whitespace()
                .filter(|w| !w.starts_with('<'))
                .count()
                >= 2,
            "{cmd:?} {flag} has no help: {line:?}\n{help}"
        );
    }
}

/// Point 16: long operations draw a progress bar on stderr when it is a terminal, and none
/// when it is not (a script's stderr stays clean).
#[test]
fn long_operations_show_a_progress_bar_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let r = cli(
        &d,
        Some(&admin),
        &["volume", "create", "big", "--size", "64M"],
    );
    assert!(r.ok, "{}", r.err);
    let src = dir.path().join("src.img");
    std::fs::write(&src, vec![3u8; 64 << 20]).unwrap();
    // Not a terminal: no bar.
    let r = cli(
        &d,
        Some(&admin),
        &["volume", "import", "big", src.to_str().unwrap()],
    );
    assert!(r.ok, "{}", r.err);
    assert!(!r.err.contains("importing"), "{}", r.err);
    let out = dir.path().join("out.img");
    // A terminal (script(1) gives the CLI a pseudo-terminal): the bar is drawn.
    let cmdline = format!(
        "{} volume export big {} --endpoint {} --token {}",
        env!("CARGO_BIN_EXE_strata"),
        out.display(),
        d.url,
        admin
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env("STRATA_CONFIG", d.data.with_extension("other-config.yaml"))
        .output()
        .expect("script (bsdutils)");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("exporting big"), "{tty}");
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap());
    let r = cli(
        &d,
        Some(&admin),
        &["volume", "export", "big", out.to_str().unwrap()],
    );
    assert!(r.ok && !r.err.contains("exporting"), "{}", r.err);
}
