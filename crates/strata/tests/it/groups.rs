//! Checkpoint groups through the CLI and a real NBD client: take one over several volumes,
//! open a member by the group's name, refuse deleting a member alone, clone the whole group
//! for a new job, keep the newest N of a series, and give the snapshot counts back on delete.

use crate::common::*;
use serde_json::Value;

#[test]
fn checkpoint_groups_take_clone_retain_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let run = |args: &[&str]| -> std::process::Output {
        strata()
            .args(args)
            .args(["--endpoint", &d.url, "--token", &admin])
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let o = run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let json = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&ok(&a)).unwrap()
    };
    ok(&["tenant", "create", "ml"]);
    for s in ["shard0", "shard1"] {
        ok(&["volume", "create", s, "--size", "8M", "--tenant", "ml"]);
    }
    let qemu_io = |uri: &str, cmd: &str, ro: bool| -> std::process::Output {
        let mut c = std::process::Command::new("qemu-io");
        if ro {
            c.arg("-r");
        }
        c.args(["-f", "raw", "-c", cmd, uri])
            .output()
            .expect("qemu-io (qemu-utils) is installed")
    };
    let write = |vol: &str, byte: u8| {
        let uri = ok(&["volume", "attach", vol, "--tenant", "ml"]);
        let o = qemu_io(&uri, &format!("write -P {byte} 0 1M"), false);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    write("shard0", 0x10);
    write("shard1", 0x11);

    let g = json(&[
        "snapshot",
        "create-group",
        "step1",
        "shard0",
        "shard1",
        "--tenant",
        "ml",
    ]);
    assert_eq!(g["members"].as_array().unwrap().len(), 2, "{g}");
    assert_eq!(g["ready"], true);
    write("shard0", 0x20);

    // A member opens by the group's name and holds the content from before.
    let uri = ok(&["volume", "attach", "shard0@step1", "--tenant", "ml"]);
    let o = qemu_io(&uri, "read -P 0x10 0 1M", true);
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("failed"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A member is deleted only with its group.
    let o = run(&["snapshot", "delete", "shard0", "step1", "--tenant", "ml"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshot_in_group"));
    // A second group by the same name is refused.
    let o = run(&[
        "snapshot",
        "create-group",
        "step1",
        "shard1",
        "--tenant",
        "ml",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshot_group_exists"));
    // One volume twice is refused, and nothing is left of it.
    let o = run(&[
        "snapshot",
        "create-group",
        "dup",
        "shard0",
        "shard0",
        "--tenant",
        "ml",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid_argument"));

    // The whole group cloned for a new job: volumes with the group's content.
    let c = json(&[
        "snapshot",
        "clone-group",
        "step1",
        "--prefix",
        "job2",
        "--tenant",
        "ml",
    ]);
    let names: Vec<&str> = c["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job2-shard0", "job2-shard1"]);
    let uri = ok(&["volume", "attach", "job2-shard0", "--tenant", "ml"]);
    let o = qemu_io(&uri, "read -P 0x10 0 1M", true);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("failed"));

    // Retention: a series keeps its newest 2.
    for n in ["s-a", "s-b", "s-c"] {
        ok(&[
            "snapshot",
            "create-group",
            n,
            "shard0",
            "shard1",
            "--tenant",
            "ml",
            "--series",
            "hourly",
            "--keep",
            "2",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let l = json(&["snapshot", "list-groups", "--tenant", "ml"]);
    let mut have: Vec<&str> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    have.sort();
    assert_eq!(have, ["s-b", "s-c", "step1"], "{l}");
    let snaps = |vol: &str| -> usize {
        json(&["snapshot", "list", vol, "--tenant", "ml"])["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(snaps("shard0"), 3);

    // Deleting groups gives their snapshots back, in the engine and in the quota.
    for n in ["step1", "s-b", "s-c"] {
        ok(&["snapshot", "delete-group", n, "--tenant", "ml"]);
    }
    assert_eq!(snaps("shard0"), 0);
    assert_eq!(snaps("shard1"), 0);
    let (_, t) = d.call("GET", "/v1/tenants/ml", &admin, None);
    assert_eq!(t["usage"]["snapshots"], 0, "{t}");
    let o = run(&["snapshot", "show-group", "step1", "--tenant", "ml"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshot_group_not_found"));
}
