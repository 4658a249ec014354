//! Helpers for data-path tests: uniquely named network namespaces deleted on drop (also when
//! a test fails), commands run inside them, and iperf3 servers killed on drop.
//!
//! These tests need root and the tools `ip`, `ping`, `iperf3` (and `ethtool`): a missing tool
//! fails the test, it never skips.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (`{prefix}{pid}{n}`, at most 15 bytes so it
/// also fits an interface name).
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let s = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(s.len() <= 15, "name {s} too long for an interface");
    s
}

/// Fails the test if a tool is missing.
pub fn require(tools: &[&str]) {
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`{t}` is required by this test (apt-get install iproute2 iputils-ping iperf3 ethtool tcpdump netcat-openbsd)"
        );
    }
}

/// Runs a command, returning its output (no assertion).
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace, deleted (with every interface in it) on drop. IPv6 is disabled in it
/// so the only traffic is what the test makes, which keeps counter deltas exact.
#[derive(Debug)]
pub struct Netns {
    /// Name (as `ip netns` knows it).
    pub name: String,
}

impl Netns {
    /// Creates a namespace named from `tag`.
    pub fn new(tag: &str) -> Netns {
        let name = unique(&format!("sn{tag}"));
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.sysctl("net/ipv6/conf/all/disable_ipv6", "1");
        ns.sysctl("net/ipv6/conf/default/disable_ipv6", "1");
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Path for `setns` (what `DataplaneConfig::netns` takes).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Writes `/proc/sys/{key}` inside the namespace (no procps needed: `/proc/sys/net` shows
    /// the namespace of the process that opens it).
    pub fn sysctl(&self, key: &str, value: &str) {
        assert!(key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_-.".contains(&c)));
        self.exec(&["sh", "-c", &format!("echo {value} > /proc/sys/{key}")]);
    }

    /// Runs a command inside, asserting success.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside without asserting.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Moves interface `dev` from namespace `from` into this one, gives it `addr` (CIDR, may
    /// be empty) and brings it up. Neighbour probing is slowed on it so that no unicast ARP
    /// probe lands in the middle of a counter check.
    pub fn adopt(&self, from: &Netns, dev: &str, addr: &str, mtu: Option<u32>) {
        sh(&[
            "ip", "-n", &from.name, "link", "set", dev, "netns", &self.name,
        ]);
        self.sysctl(
            &format!("net/ipv4/neigh/{dev}/delay_first_probe_time"),
            "60",
        );
        if !addr.is_empty() {
            self.exec(&["ip", "addr", "add", addr, "dev", dev]);
        }
        if let Some(m) = mtu {
            self.exec(&["ip", "link", "set", dev, "mtu", &m.to_string()]);
        }
        self.exec(&["ip", "link", "set", dev, "up"]);
    }

    /// `ping -c count -s size dst` from inside: true if every reply came back.
    pub fn ping(&self, dst: &str, count: u32, size: u32) -> bool {
        self.try_exec(&[
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-s",
            &size.to_string(),
            dst,
        ])
        .status
        .success()
    }

    /// Starts an iperf3 server on `addr` (one client, then it exits), waiting until it
    /// listens.
    pub fn iperf_server(&self, addr: &str) -> Iperf {
        let child = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "iperf3", "-s", "-1", "-B", addr,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 -s");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let o = self.try_exec(&["ss", "-Hltn", "sport", "=", ":5201"]);
            if String::from_utf8_lossy(&o.stdout).contains("5201") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Iperf { child }
    }

    /// Runs an iperf3 TCP client for `secs` seconds to `dst` (`reverse`: the server sends).
    /// Returns the bytes the receiver got, or None if the transfer failed.
    pub fn iperf_client(&self, dst: &str, secs: u32, reverse: bool) -> Option<u64> {
        self.iperf_run(dst, secs, reverse, 1)
    }

    /// As [`Netns::iperf_client`] with `streams` parallel TCP connections (`-P`).
    pub fn iperf_client_streams(&self, dst: &str, secs: u32, streams: u32) -> Option<u64> {
        self.iperf_run(dst, secs, false, streams)
    }

    fn iperf_run(&self, dst: &str, secs: u32, reverse: bool, streams: u32) -> Option<u64> {
        let (t, p) = (secs.to_string(), streams.to_string());
        let mut args = vec![
            "iperf3",
            "-c",
            dst,
            "-t",
            &t,
            "-P",
            &p,
            "-J",
            "--connect-timeout",
            "2000",
        ];
        if reverse {
            args.push("-R");
        }
        let o = self.try_exec(&args);
        if !o.status.success() {
            return None;
        }
        let out = String::from_utf8_lossy(&o.stdout);
        // "sum_received": { ..., "bytes": N, ... }
        let at = out.find("\"sum_received\"")?;
        let rest = &out[at..];
        let b = rest.find("\"bytes\":")? + "\"bytes\":".len();
        rest[b..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete (which also deletes its interfaces).
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A running iperf3 server, killed on drop.
#[derive(Debug)]
pub struct Iperf {
    child: Child,
}

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A veth pair with one end in each namespace, addressed and up (deleted with the namespaces).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let (na, nb) = (unique("va"), unique("vb"));
    sh(&[
        "ip", "link", "add", &na, "netns", &a.name, "type", "veth", "peer", "name", &nb, "netns",
        &b.name,
    ]);
    a.exec(&["ip", "addr", "add", a_addr, "dev", &na]);
    b.exec(&["ip", "addr", "add", b_addr, "dev", &nb]);
    a.exec(&["ip", "link", "set", &na, "up"]);
    b.exec(&["ip", "link", "set", &nb, "up"]);
    (na, nb)
}
