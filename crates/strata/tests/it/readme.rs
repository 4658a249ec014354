//! The README's first hour runs as written (issue 16, point 13): the block after the
//! `<!-- readme-walkthrough -->` marker, in bash with `-euo pipefail`, against a fresh daemon
//! in a network namespace of its own (its TAP device and VXLAN port touch nothing else).

use std::process::Command;

use crate::common::*;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn walkthrough() -> String {
    let readme = include_str!("../../../../README.md");
    let at = readme
        .find("<!-- readme-walkthrough -->")
        .expect("the README marks its walk-through");
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block after the marker") + "```sh\n".len();
    let len = rest[start..].find("\n```").expect("the block ends");
    rest[start..start + len].to_string()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let script = walkthrough();
    assert!(script.lines().count() > 20, "{script}");
    let ns = Netns(format!("strata-readme-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("strata-data");
    let d = Daemon::start_in(&data, &["--nbd-listen", "127.0.0.1:10809"], Some(&ns.0));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_strata"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "bash", "-euo", "pipefail", "-c", &script,
        ])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("STRATA_CONFIG", data.with_extension("config.yaml"))
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ENDPOINT")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the walk-through failed:\n{out}\n{err}");
    // What the commands showed, beyond their exit codes.
    assert!(out.contains("virtual size: 10 GiB"), "qemu-img info: {out}");
    assert!(
        out.contains("job2-shard0") && out.contains("job2-shard2"),
        "{out}"
    );
    // The tenant network: the port says what to plug where, and the trace from vm2 reaches
    // vm1 through the router and the https rule.
    assert!(out.contains("plug into TAP device sp"), "{out}");
    assert!(out.contains("delivered to vm1"), "{out}");
    assert!(
        out.contains("security group https rule r2: ingress tcp port 443"),
        "{out}"
    );
    // The trace is the block's last command: its verdict is an output to tap1, not a drop.
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.contains("tap1") && !last.to_lowercase().contains("drop"),
        "the trace should end in an output to tap1: {last}\n{out}"
    );
    drop(d);
}
