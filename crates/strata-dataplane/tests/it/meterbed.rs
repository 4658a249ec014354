//! The bed of the meter tests and of the burst measurement (`examples/meterburst.rs`): three
//! namespaces on TAPs of one dataplane, iperf3 between them. Needs root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_dataplane::{Dataplane, DataplaneConfig, PortSpec};
use strata_net::MeterConfig;

use crate::netenv::{unique, Netns};

pub const MBIT: u64 = 1_000_000;

/// Three namespaces (two senders, one receiver) on TAPs of one dataplane: t1 and t2 go
/// through meters 1 and 2, everything else is `normal`.
pub struct Bed {
    _host: Netns,
    /// The two senders (through meters 1 and 2).
    pub senders: [Netns; 2],
    /// The receiver.
    pub rx: Netns,
    /// The dataplane.
    pub dp: Dataplane,
    /// The TAPs of the senders and of the receiver.
    pub taps: [String; 3],
}

pub fn bed(net: u8) -> Bed {
    let host = Netns::new("h");
    let (s1, s2, rx) = (Netns::new("s"), Netns::new("s"), Netns::new("r"));
    let dp = Dataplane::spawn(DataplaneConfig {
        netns: Some(host.path()),
        ..DataplaneConfig::default()
    })
    .expect("dataplane starts");
    let taps = [unique("tm"), unique("tm"), unique("tm")];
    for t in &taps {
        dp.add_port(PortSpec::tap(t, None)).unwrap();
    }
    dp.add_flow("priority=0,actions=normal").unwrap();
    for (i, t) in taps.iter().take(2).enumerate() {
        dp.add_flow(&format!(
            "priority=10,in_port={t},actions=meter:{},normal",
            i + 1
        ))
        .unwrap();
    }
    s1.adopt(&host, &taps[0], &format!("10.{net}.0.1/24"), None);
    s2.adopt(&host, &taps[1], &format!("10.{net}.0.2/24"), None);
    rx.adopt(&host, &taps[2], &format!("10.{net}.0.3/24"), None);
    Bed {
        _host: host,
        senders: [s1, s2],
        rx,
        dp,
        taps,
    }
}

/// An iperf3 server on `addr:port` in `ns` (one client), killed on drop.
pub struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn server(ns: &Netns, addr: &str, port: u16) -> Server {
    let p = port.to_string();
    let child = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "iperf3", "-s", "-1", "-B", addr, "-p", &p,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iperf3 -s");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let o = ns.try_exec(&["ss", "-Hltn", "sport", "=", &format!(":{port}")]);
        if String::from_utf8_lossy(&o.stdout).contains(&p) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

/// iperf3 TCP from `ns` to `dst:port` for `secs`: the receiver's rate in bit/s.
pub fn client(ns_name: &str, dst: &str, port: u16, secs: u32) -> Option<f64> {
    let (p, t) = (port.to_string(), secs.to_string());
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns_name,
            "iperf3",
            "-c",
            dst,
            "-p",
            &p,
            "-t",
            &t,
            "-J",
            "--connect-timeout",
            "2000",
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let at = out.find("\"sum_received\"")?;
    let rest = &out[at..];
    let b = rest.find("\"bits_per_second\":")? + "\"bits_per_second\":".len();
    rest[b..]
        .trim_start()
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+'))
        .next()?
        .parse()
        .ok()
}

pub fn capped_run(b: &Bed, net: u8, cfg: MeterConfig, secs: u32) -> f64 {
    b.dp.with_switch(move |sw, _| sw.set_meter(1, cfg))
        .unwrap()
        .unwrap();
    let _srv = server(&b.rx, &format!("10.{net}.0.3"), 5201);
    client(&b.senders[0].name, &format!("10.{net}.0.3"), 5201, secs)
        .expect("iperf3 through a meter")
}
