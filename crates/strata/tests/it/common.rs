//! A real `strata serve` process for tests, on a temporary data dir and a free port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary, with the CLI config (`config.rs`) in a place of this test process: tests never
/// read or write the real home's.
pub fn strata() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.env(
        "STRATA_CONFIG",
        std::env::temp_dir().join(format!("strata-it-{}.config.yaml", std::process::id())),
    );
    c
}

pub struct Daemon {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    agent: ureq::Agent,
    /// The last warning and error lines the daemon logged (at most [`KEPT_LOG_LINES`]).
    warnings: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Warning and error lines a [`Daemon`] keeps for a failing test to show.
const KEPT_LOG_LINES: usize = 100;

impl Daemon {
    /// Starts `strata serve` and waits until it is serving.
    pub fn start(data: &Path) -> Daemon {
        Self::start_with(data, &[])
    }

    /// Starts `strata serve` with extra arguments.
    pub fn start_with(data: &Path, extra: &[&str]) -> Daemon {
        Self::start_in(data, extra, None)
    }

    /// Starts `strata serve` with extra arguments, inside network namespace `netns` if given
    /// (its `url` is then reachable only from inside it).
    pub fn start_in(data: &Path, extra: &[&str], netns: Option<&str>) -> Daemon {
        Self::start_env(data, extra, netns, &[])
    }

    /// [`Daemon::start_in`] with extra environment variables for the daemon only (test-only
    /// switches such as fault points, never set in this test process).
    pub fn start_env(
        data: &Path,
        extra: &[&str],
        netns: Option<&str>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = match netns {
            None => strata(),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_strata")]);
                c
            }
        };
        // The API on loopback unless the caller names an address (a daemon in a namespace
        // that the test reaches over a veth).
        if !extra.contains(&"--listen") {
            cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        } else {
            cmd.arg("serve");
        }
        let mut child = cmd
            .args(["--default-pool-size", "8G", "--data-dir"])
            .arg(data)
            .args(extra)
            // Each daemon's first start writes its own CLI config beside its data dir.
            .env("STRATA_CONFIG", data.with_extension("config.yaml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let warnings: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>> =
            Default::default();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "serve exited early");
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                warnings
                    .lock()
                    .unwrap()
                    .push_back(line.trim_end().to_string());
            }
            if line.contains("strata serving") {
                let at = line.find("listen=").expect("listen field") + "listen=".len();
                break line[at..].split_whitespace().next().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "serve did not start");
        };
        let kept = warnings.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(err.read_line(&mut line), Ok(n) if n > 0) {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    let mut k = kept.lock().unwrap();
                    if k.len() == KEPT_LOG_LINES {
                        k.pop_front();
                    }
                    k.push_back(line.trim_end().to_string());
                }
                line.clear();
            }
        });
        Daemon {
            warnings,
            child,
            url: format!("http://{addr}"),
            data: data.to_path_buf(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// The warning and error lines the daemon logged lately, one per line (for the message
    /// of a failing test).
    #[allow(dead_code)]
    pub fn warnings(&self) -> String {
        let k = self.warnings.lock().unwrap();
        k.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The daemon's process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin token the daemon wrote.
    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `/metrics` as the admin reads it (curl, as Prometheus would scrape it).
    pub fn metrics(&self) -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {}", self.admin()),
            ])
            .arg(format!("{}/metrics", self.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /metrics: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// One API call; returns the status and the JSON body (Null when empty).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {token}");
        let r = match method {
            "GET" => self.agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            m => {
                let b = body.unwrap_or(Value::Null);
                let req = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                req.header("Authorization", &auth).send_json(&b)
            }
        };
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// SIGTERM, and the daemon must exit 0.
    pub fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "serve exited with {st}");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace the test owns, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (needs root and iproute2)");
        Netns(name.to_string())
    }
    pub fn sh(&self, args: &[&str]) {
        let mut v = vec!["netns", "exec", &self.0];
        v.extend_from_slice(args);
        let st = std::process::Command::new("ip").args(&v).status().unwrap();
        assert!(st.success(), "ip {v:?}");
    }
    /// Moves `dev` (in the root namespace, where the daemon opened it) in here with `addr`.
    pub fn adopt(&self, dev: &str, addr: &str) {
        let st = std::process::Command::new("ip")
            .args(["link", "set", dev, "netns", &self.0])
            .status()
            .unwrap();
        assert!(st.success());
        self.sh(&["ip", "addr", "add", addr, "dev", dev]);
        self.sh(&["ip", "link", "set", dev, "up"]);
        self.sh(&["ip", "link", "set", "lo", "up"]);
    }
    pub fn ping(&self, dst: &str) -> bool {
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.0, "ping", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Netns {
    /// Runs a command inside; its output and whether it succeeded.
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let mut v = vec!["netns", "exec", &self.0];
        v.extend_from_slice(args);
        let o = std::process::Command::new("ip").args(&v).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    }
    /// Moves `dev` in here with its MAC set and no address (for DHCP).
    pub fn adopt_bare(&self, dev: &str, mac: &str) {
        let st = std::process::Command::new("ip")
            .args(["link", "set", dev, "netns", &self.0])
            .status()
            .unwrap();
        assert!(st.success());
        self.sh(&["ip", "link", "set", dev, "address", mac]);
        self.sh(&["ip", "link", "set", dev, "up"]);
        self.sh(&["ip", "link", "set", "lo", "up"]);
        // The veth-style partial checksums of a TAP's kernel side: offloads off, as a NIC
        // would fill them in.
        let _ = self.run(&["ethtool", "-K", dev, "tx", "off"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Fails unless promtool (Debian package prometheus) accepts `text` as Prometheus metrics.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let res = check.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// The CLI against one daemon and its data dir (the tenant-network tests).
pub struct Cli<'a> {
    /// The daemon.
    pub d: &'a Daemon,
    /// Its data dir (the admin token).
    pub data: &'a std::path::Path,
}

impl Cli<'_> {
    /// Runs; success and stdout+stderr.
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let o = strata()
            .args(args)
            .arg("--endpoint")
            .arg(&self.d.url)
            .arg("--data-dir")
            .arg(self.data)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    }
    /// Runs; fails the test unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "strata {args:?}: {out}");
        out
    }
    /// Runs with `-o json`.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

/// A string field of a JSON object (empty if absent).
pub fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// A port plugged into a namespace with a static address (its MAC set as the port's).
pub fn plug(ns: &Netns, port: &serde_json::Value, prefix: u8, gw: &str) {
    plug_on_link(ns, port, prefix);
    let dev = s(port, "device");
    ns.sh(&["ip", "route", "add", "default", "via", gw, "dev", &dev]);
}

/// A port plugged in with its address and no default route.
pub fn plug_on_link(ns: &Netns, port: &serde_json::Value, prefix: u8) {
    ns.adopt_bare(&s(port, "device"), &s(port, "mac"));
    let dev = s(port, "device");
    let addr = format!("{}/{prefix}", s(port, "ip"));
    ns.sh(&["ip", "addr", "add", &addr, "dev", &dev]);
}
