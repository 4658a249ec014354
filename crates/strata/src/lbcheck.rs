//! The daemon's load-balancer health checker: it puts each network's monitor port in its
//! namespace, runs the probes the checker engine (`strata_vpc::health`) says are due from
//! that namespace, and hands the engine's up/down decisions to the controller (which marks
//! the backend in the switch's group and audits the change).
//!
//! Why a namespace per network: tenants' address spaces may overlap, and a backend lives
//! behind a TAP port of the integration switch, so a probe must leave through the switch
//! from an address of that network. The monitor port is a real port of the network; its TAP
//! moves into `strata-mon-<network>` with the port's MAC and address and a default route via
//! its subnet's gateway, and a probe is an ordinary `connect` (and for HTTP, a GET) made by a
//! thread that entered that namespace (`setns`, through rustix's safe wrapper). Each probe has
//! its own short-lived thread, so a slow backend never delays another's probe.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_control::controller::MonitorSpec;
use strata_control::Controller;
use strata_vpc::health::{Checker, Probe, Target};
use strata_vpc::HealthKind;

/// How often the loop looks for due probes and new monitors.
const TICK: Duration = Duration::from_millis(100);

/// Starts the checker thread.
pub fn spawn(ctl: &Arc<Controller>) -> anyhow::Result<()> {
    let weak = Arc::downgrade(ctl);
    std::thread::Builder::new()
        .name("lb-health".into())
        .spawn(move || {
            let start = Instant::now();
            let mut checker = Checker::new();
            let mut placed: BTreeSet<(String, String)> = BTreeSet::new();
            let (tx, rx) = mpsc::channel::<(Target, bool)>();
            loop {
                std::thread::sleep(TICK);
                let Some(c) = weak.upgrade() else { break };
                let set = c.lb_probe_set();
                for m in &set.monitors {
                    let k = (m.namespace.clone(), m.device.clone());
                    // A restarted daemon opens a new TAP: it is in the host namespace again.
                    let on_host = std::path::Path::new("/sys/class/net").join(&m.device).exists();
                    if !placed.contains(&k) || on_host {
                        match place_monitor(m) {
                            Ok(()) => {
                                placed.insert(k);
                            }
                            Err(e) => {
                                tracing::warn!(namespace = %m.namespace, %e, "monitor port not placed")
                            }
                        }
                    }
                }
                let now = start.elapsed();
                let namespaces: std::collections::BTreeMap<Target, String> = set
                    .targets
                    .iter()
                    .map(|(t, _, ns)| (*t, ns.clone()))
                    .collect();
                checker.sync(set.targets.into_iter().map(|(t, h, _)| (t, h)), now);
                for probe in checker.due(now) {
                    let Some(ns) = namespaces.get(&probe.target).cloned() else {
                        continue;
                    };
                    let tx = tx.clone();
                    let target = probe.target;
                    let spawned = std::thread::Builder::new()
                        .name("lb-probe".into())
                        .spawn(move || {
                            let ok = run_probe(&ns, &probe);
                            let _ = tx.send((probe.target, ok));
                        });
                    if spawned.is_err() {
                        // No thread: a failed probe (the backend is not shown healthy).
                        let _ = checker.report(target, false);
                    }
                }
                while let Ok((t, ok)) = rx.try_recv() {
                    if let Some(d) = checker.report(t, ok) {
                        if let Err(e) = c.set_lb_backend_health(d.target, d.up) {
                            tracing::warn!(%e, "backend health not applied");
                        }
                    }
                }
            }
        })?;
    Ok(())
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    if !ns.is_empty() {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes the namespace (if absent) and moves the monitor's TAP into it, configured.
fn place_monitor(m: &MonitorSpec) -> anyhow::Result<()> {
    if !std::path::Path::new("/run/netns")
        .join(&m.namespace)
        .exists()
    {
        ip("", &["netns", "add", &m.namespace])?;
    }
    ip("", &["link", "set", &m.device, "netns", &m.namespace])?;
    let ns = m.namespace.as_str();
    ip(ns, &["link", "set", "lo", "up"])?;
    ip(ns, &["link", "set", &m.device, "address", &m.mac])?;
    ip(
        ns,
        &[
            "addr",
            "replace",
            &format!("{}/{}", m.ip, m.prefix),
            "dev",
            &m.device,
        ],
    )?;
    ip(ns, &["link", "set", &m.device, "up"])?;
    // Checksums filled in by the kernel, as a NIC would (the TAP's side otherwise leaves
    // them partial); best effort, ethtool may be absent.
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", &m.device, "tx", "off"])
        .output();
    ip(
        ns,
        &["route", "replace", "default", "via", &m.gateway.to_string()],
    )?;
    Ok(())
}

/// Runs one probe from namespace `ns` (this thread enters it and ends after).
fn run_probe(ns: &str, p: &Probe) -> bool {
    let entered = std::fs::File::open(format!("/run/netns/{ns}")).and_then(|f| {
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(std::io::Error::from)
    });
    if entered.is_err() {
        return false;
    }
    let addr = SocketAddr::from((p.target.ip, p.target.port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, p.timeout) else {
        return false;
    };
    match &p.kind {
        HealthKind::None | HealthKind::Tcp => true,
        HealthKind::Http { path } => http_ok(&mut s, p, path),
    }
}

/// An HTTP/1.0 GET: healthy on a 2xx or 3xx status line within the timeout.
fn http_ok(s: &mut TcpStream, p: &Probe, path: &str) -> bool {
    let deadline = Instant::now() + p.timeout;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    if s.set_write_timeout(Some(left(deadline))).is_err() {
        return false;
    }
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: strata-health\r\nConnection: close\r\n\r\n",
        p.target.ip
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        if s.set_read_timeout(Some(left(deadline))).is_err() {
            return false;
        }
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    status_ok(&buf[..n])
}

/// Whether a response starts with an `HTTP/1.x` status line of 2xx or 3xx.
fn status_ok(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"HTTP/1.") else {
        return false;
    };
    matches!(rest, [_, b' ', b'2' | b'3', b'0'..=b'9', b'0'..=b'9', ..])
}

#[cfg(test)]
mod tests {
    use super::status_ok;

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.0 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.1 302 Found"));
        assert!(!status_ok(b"HTTP/1.0 404 Not Found"));
        assert!(!status_ok(b"HTTP/1.0 500 x"));
        assert!(!status_ok(b"HTTP/1.0 2"));
        assert!(!status_ok(b"SSH-2.0"));
    }
}
