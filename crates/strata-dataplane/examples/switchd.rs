//! A small standalone runner of the Strata dataplane (until `strata serve` drives it).
//!
//! ```text
//! switchd [--netns NAME|PATH] [--tap NAME[:vni=N|:vlan=N][:nooffload]]...
//!         [--internal NAME[:vni=N|:vlan=N]]...
//!         [--veth NAME[:peer=PEER][:vni=N|:vlan=N][:novnet]]...
//!         [--vxlan NAME:local=IP:remote=IP[:vni=N][:dstport=4789]]...
//!         [--flow "FLOW"]... [--stats-file F] [--batch N] [--threads N] [--no-fastpath]
//! ```
//!
//! `--threads` sets the forwarding threads (default: one per CPU, at most 4); each reads its
//! own queue of every TAP. `--no-fastpath` keeps veth ports' established flows in user space
//! (no eBPF fast path).
//!
//! With no `--flow`, the switch gets `priority=0,actions=normal` (a MAC-learning switch with
//! tenant isolation). Prints `ready` once every port is open. SIGUSR1 prints the counters
//! (and rewrites `--stats-file`); SIGTERM or SIGINT stops, prints them and exits 0. The
//! counter format is `DataplaneStats::to_text`: one `port name=.. no=.. key=value...` line
//! per port and one `switch ...` line.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use strata_dataplane::sys::SignalSet;
use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneStats, PortSpec};
use strata_net::vxlan::VXLAN_PORT;
use strata_net::Domain;

fn parse_domain(kv: &str) -> Result<Option<Domain>> {
    Ok(match kv.split_once('=') {
        Some(("vni", v)) => Some(Domain::Vni(v.parse().context("vni")?)),
        Some(("vlan", v)) => Some(Domain::Vlan(v.parse().context("vlan")?)),
        _ => None,
    })
}

fn parse_tap(arg: &str, internal: bool) -> Result<PortSpec> {
    let mut it = arg.split(':');
    let name = it.next().unwrap_or_default().to_string();
    let (mut domain, mut offload) = (None, true);
    for opt in it {
        if opt == "nooffload" {
            offload = false;
        } else if let Some(d) = parse_domain(opt)? {
            domain = Some(d);
        } else {
            bail!("unknown TAP option `{opt}` in `{arg}`");
        }
    }
    Ok(if internal {
        PortSpec::Internal { name, domain }
    } else {
        PortSpec::Tap {
            name,
            domain,
            offload,
        }
    })
}

fn parse_veth(arg: &str) -> Result<PortSpec> {
    let mut it = arg.split(':');
    let name = it.next().unwrap_or_default().to_string();
    let (mut domain, mut peer, mut vnet_hdr) = (None, None, true);
    for opt in it {
        if opt == "novnet" {
            vnet_hdr = false;
        } else if let Some(p) = opt.strip_prefix("peer=") {
            peer = Some(p.to_string());
        } else if let Some(d) = parse_domain(opt)? {
            domain = Some(d);
        } else {
            bail!("unknown veth option `{opt}` in `{arg}`");
        }
    }
    Ok(PortSpec::Veth {
        name,
        peer,
        domain,
        vnet_hdr,
    })
}

fn parse_vxlan(arg: &str) -> Result<PortSpec> {
    let mut it = arg.split(':');
    let name = it.next().unwrap_or_default().to_string();
    let (mut local, mut remote, mut vni, mut dst_port) =
        (Ipv4Addr::UNSPECIFIED, None, None, VXLAN_PORT);
    for opt in it {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| anyhow!("expected key=value, got `{opt}`"))?;
        match k {
            "local" => local = v.parse().context("local")?,
            "remote" => remote = Some(v.parse().context("remote")?),
            "vni" => vni = Some(v.parse().context("vni")?),
            "dstport" => dst_port = v.parse().context("dstport")?,
            _ => bail!("unknown VXLAN option `{k}`"),
        }
    }
    Ok(PortSpec::Vxlan {
        name,
        local,
        remote: remote.ok_or_else(|| anyhow!("--vxlan {arg}: remote= is required"))?,
        vni,
        dst_port,
        flow_keyed: false,
    })
}

fn report(st: &DataplaneStats, file: Option<&PathBuf>) -> Result<()> {
    let text = st.to_text();
    print!("{text}");
    std::io::stdout().flush()?;
    if let Some(f) = file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, f)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // Before any thread exists, so the dataplane thread inherits the mask.
    let sigs = SignalSet::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGUSR1])?;
    let mut cfg = DataplaneConfig::default();
    let (mut ports, mut flows, mut stats_file) = (Vec::new(), Vec::new(), None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--tap" => ports.push(parse_tap(&val()?, false)?),
            "--internal" => ports.push(parse_tap(&val()?, true)?),
            "--veth" => ports.push(parse_veth(&val()?)?),
            "--vxlan" => ports.push(parse_vxlan(&val()?)?),
            "--flow" => flows.push(val()?),
            "--stats-file" => stats_file = Some(PathBuf::from(val()?)),
            "--batch" => cfg.batch = val()?.parse().context("--batch")?,
            "--threads" => cfg.threads = val()?.parse().context("--threads")?,
            "--no-fastpath" => cfg.fastpath = false,
            "--netns" => {
                let v = val()?;
                cfg.netns = Some(if v.contains('/') {
                    PathBuf::from(v)
                } else {
                    PathBuf::from("/var/run/netns").join(v)
                });
            }
            "-h" | "--help" => {
                println!(
                    "switchd [--netns NS] [--tap NAME[:vni=N|:vlan=N][:nooffload]]... \
                     [--internal NAME] [--veth NAME[:peer=P][:novnet]]... [--vxlan NAME:local=IP:remote=IP[:vni=N][:dstport=P]]... \
                     [--flow FLOW]... [--stats-file F] [--batch N] [--threads N] [--no-fastpath]"
                );
                return Ok(());
            }
            _ => bail!("unknown argument `{a}` (try --help)"),
        }
    }
    let dp = Dataplane::spawn(cfg)?;
    for p in ports {
        let name = p.name().to_string();
        dp.add_port(p)
            .with_context(|| format!("adding port {name}"))?;
    }
    if flows.is_empty() {
        flows.push("priority=0,actions=normal".into());
    }
    for f in &flows {
        dp.add_flow(f)
            .with_context(|| format!("adding flow `{f}`"))?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    // SIGUSR1 reports; SIGTERM or SIGINT ends the loop.
    while sigs.wait()? == libc::SIGUSR1 {
        report(&dp.stats()?, stats_file.as_ref())?;
    }
    report(&dp.stop(), stats_file.as_ref())
}
