//! The measurement behind the meters' default burst (docs/net-engine.md, "Meters and slices"):
//! TCP goodput through a Strata meter capped at a rate, for several bucket depths, beside the
//! Linux token bucket filter (`tc qdisc ... tbf`) with the same rate and depth on a veth
//! between two namespaces. A policer drops what a shaper would queue, so at small depths the
//! meter's TCP falls far below the cap while tbf's does not; the depth where the meter reaches
//! the cap is the default. Run by `bench/meter.sh` (root, iperf3).
//!
//! `STRATA_BURST_MS` (default `10,50,100,200,250,400,1000`), `STRATA_METER_SECS` (default 5).

#[path = "../tests/it/meterbed.rs"]
#[allow(dead_code)]
mod meterbed;
#[path = "../tests/it/netenv.rs"]
#[allow(dead_code)]
mod netenv;

use meterbed::{bed, capped_run, client, server, MBIT};
use netenv::{require, veth, Netns};
use strata_net::MeterConfig;

fn main() {
    require(&["ip", "sh", "iperf3", "ss", "tc"]);
    let secs: u32 = std::env::var("STRATA_METER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let ms: Vec<u64> = std::env::var("STRATA_BURST_MS")
        .unwrap_or_else(|_| "10,50,100,200,250,400,1000".into())
        .split(',')
        .map(|x| x.trim().parse().expect("STRATA_BURST_MS: milliseconds"))
        .collect();
    let net = 74;
    let b = bed(net);
    // The peer: a veth between two namespaces, tbf on the sender's side.
    let (tx, rx) = (Netns::new("ts"), Netns::new("tr"));
    let (tx_dev, _) = veth(&tx, "10.75.0.1/24", &rx, "10.75.0.2/24");
    println!("# TCP through a cap, {secs} s per run, one iperf3 stream");
    println!("rate_mbit\tburst_ms\tburst_bytes\tstrata_mbit\ttbf_mbit\tratio");
    for rate in [200 * MBIT, 1000 * MBIT] {
        for &m in &ms {
            let burst = (rate / 8 * m / 1000).max(65_535);
            let cfg = MeterConfig::cap(rate).with_burst(burst);
            let strata = capped_run(&b, net, cfg, secs);
            tx.exec(&[
                "tc",
                "qdisc",
                "replace",
                "dev",
                &tx_dev,
                "root",
                "tbf",
                "rate",
                &format!("{}mbit", rate / MBIT),
                "burst",
                &cfg.burst().to_string(),
                "latency",
                "50ms",
            ]);
            let peer = {
                let _srv = server(&rx, "10.75.0.2", 5301);
                client(&tx.name, "10.75.0.2", 5301, secs).expect("iperf3 through tbf")
            };
            println!(
                "{}\t{}\t{}\t{:.1}\t{:.1}\t{:.2}",
                rate / MBIT,
                m,
                cfg.burst(),
                strata / 1e6,
                peer / 1e6,
                strata / peer
            );
        }
    }
}
