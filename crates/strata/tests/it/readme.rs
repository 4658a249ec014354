//! Every README example runs as written (issue 16, point 13): each fenced block of the
//! README is a `sh` block, and every one not marked `<!-- readme: not run (...) -->` runs, in
//! order, in one bash with `-euo pipefail`, against one fresh daemon in a network namespace of
//! its own (its TAP devices and VXLAN port touch nothing else). The blocks left out may only
//! be the set-up commands and the benchmarks, so a new example cannot be left untested by
//! forgetting it.

use std::process::Command;

use crate::common::*;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The marker that leaves the next block out.
const NOT_RUN: &str = "<!-- readme: not run";

/// Printed between blocks, so the test can tell which block printed what.
const SEPARATOR: &str = "=== readme block";

/// The README's fenced blocks: (left out, body). Panics on a fence without a language or
/// with one other than `sh`, and on an unterminated block.
fn blocks(readme: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate();
    let mut previous = "";
    while let Some((no, line)) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            assert_eq!(
                lang,
                "sh",
                "README line {}: every example is a `sh` block (run by this test)",
                no + 1
            );
            let mut body = String::new();
            loop {
                let (_, l) = lines.next().expect("the README's block ends");
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push((previous.starts_with(NOT_RUN), body));
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    out
}

#[test]
fn only_set_up_and_benchmarks_are_left_out() {
    let all = blocks(include_str!("../../../../README.md"));
    assert!(all.len() >= 7, "{all:?}");
    let allowed = [
        "cargo run ",
        "bash scripts/test",
        "bash bench/",
        "sudo bash bench/",
        "cargo bench ",
    ];
    for (skipped, body) in &all {
        if !skipped {
            continue;
        }
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                allowed.iter().any(|a| line.starts_with(a)),
                "a block left out of the README test holds an example: {line}"
            );
        }
    }
    assert_eq!(all.iter().filter(|(s, _)| *s).count(), 3, "{all:?}");
}

/// The blocks that run, joined into one script that prints a separator before each.
fn script() -> (String, usize) {
    let all = blocks(include_str!("../../../../README.md"));
    let run: Vec<&String> = all.iter().filter(|(s, _)| !s).map(|(_, b)| b).collect();
    let mut script = String::new();
    for (i, b) in run.iter().enumerate() {
        script.push_str(&format!("echo '{SEPARATOR} {i}'\n{b}"));
    }
    (script, run.len())
}

#[test]
fn every_readme_example_runs_as_written() {
    let (script, count) = script();
    assert!(count >= 5, "{script}");
    let readme = include_str!("../../../../README.md");
    // The encryption block says how this daemon was started; the test does exactly that.
    for said in [
        "# strata master-key create ./master.key",
        "# strata serve --master-key-file ./master.key",
    ] {
        assert!(readme.contains(said), "the README no longer says: {said}");
    }
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
    let key = dir.path().join("master.key");
    let made = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["master-key", "create"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let d = Daemon::start_in(
        &data,
        &[
            "--nbd-listen",
            "127.0.0.1:10809",
            "--master-key-file",
            key.to_str().unwrap(),
        ],
        Some(&ns.0),
    );
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
    assert!(o.status.success(), "a README example failed:\n{out}\n{err}");
    let printed: Vec<&str> = out.split(SEPARATOR).skip(1).collect();
    assert_eq!(printed.len(), count, "{out}");
    let (first, jobs, nets, crypt, pools) =
        (printed[0], printed[1], printed[2], printed[3], printed[4]);
    // What the commands showed, beyond their exit codes. The first hour:
    assert!(
        first.contains("virtual size: 10 GiB"),
        "qemu-img info: {first}"
    );
    assert!(
        first.contains("job2-shard0") && first.contains("job2-shard2"),
        "{first}"
    );
    // The tenant network: the port says what to plug where, and the trace from vm2 reaches
    // vm1 through the router and the https rule.
    assert!(first.contains("plug into TAP device sp"), "{first}");
    assert!(first.contains("delivered to vm1"), "{first}");
    assert!(
        first.contains("security group https rule r2: ingress tcp port 443"),
        "{first}"
    );
    // The switch trace is the block's last command: its verdict is an output to tap1.
    let last = first
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.contains("tap1") && !last.to_lowercase().contains("drop"),
        "the trace should end in an output to tap1: {last}\n{first}"
    );
    // Jobs: the dry run places train on the declared node; eval waits, with the reason.
    assert!(jobs.contains("gpu-1"), "{jobs}");
    assert!(jobs.contains("pending"), "{jobs}");
    // Networks: the load balancer shows its backends; the probe answers from the ports.
    assert!(nets.contains("web2") && nets.contains("vm1"), "{nets}");
    // Encryption: the volume shows as encrypted; every device's keys were re-wrapped.
    assert!(
        crypt.contains("ENCRYPTED") && crypt.contains("true"),
        "{crypt}"
    );
    assert!(crypt.contains("default-d0  true"), "{crypt}");
    // Pools: two copies, four devices then three.
    assert!(pools.contains("fast-d3"), "{pools}");
    drop(d);
}
