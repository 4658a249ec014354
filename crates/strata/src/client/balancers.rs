//! `strata load-balancer ...`: VIPs with listeners and weighted backends, session affinity,
//! health checks. A backend is written `PORT_OR_IP[:TARGET_PORT][@WEIGHT]` (`web1`,
//! `10.0.0.7:8080@2`); a listener `PROTO:PORT` (`tcp:80`).

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use strata_control::wire;

use super::{body, enc, Client, Output};

#[derive(Subcommand, Debug)]
pub enum LoadBalancerCmd {
    /// Creates a load balancer: a VIP on a subnet, listeners, each with all the backends.
    Create {
        /// Name, unique within the network.
        name: String,
        /// Network id or name.
        #[arg(long)]
        network: String,
        /// The VIP's subnet (id or name).
        #[arg(long)]
        subnet: String,
        /// The VIP (default: the lowest free address).
        #[arg(long)]
        vip: Option<String>,
        /// A listener `tcp:PORT` or `udp:PORT` (repeat for more).
        #[arg(long = "listener", required = true)]
        listeners: Vec<String>,
        /// A backend `PORT_OR_IP[:TARGET_PORT][@WEIGHT]` (repeat for more).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// Session affinity: one client always lands on one backend.
        #[arg(long)]
        affinity: bool,
        #[command(flatten)]
        health: HealthArgs,
    },
    /// Lists a network's load balancers.
    List {
        /// Network id or name.
        network: String,
    },
    /// Shows a load balancer and its backends' health.
    Show {
        /// Load balancer id or name.
        lb: String,
    },
    /// Deletes a load balancer.
    Delete {
        /// Load balancer id or name.
        lb: String,
    },
    /// Adds a backend to every listener (or one).
    AddBackend {
        /// Load balancer id or name.
        lb: String,
        /// `PORT_OR_IP[:TARGET_PORT][@WEIGHT]`.
        backend: String,
        /// Only this listener (`tcp:80`).
        #[arg(long)]
        listener: Option<String>,
    },
    /// Removes a backend (by port name or id, or address) from every listener.
    RemoveBackend {
        /// Load balancer id or name.
        lb: String,
        /// Port id or name, or address.
        backend: String,
    },
    /// Changes weights, affinity or the health check.
    Set {
        /// Load balancer id or name.
        lb: String,
        /// `BACKEND=WEIGHT` (port id or name, or address; repeat for more).
        #[arg(long = "weight")]
        weights: Vec<String>,
        /// Session affinity on or off.
        #[arg(long)]
        affinity: Option<OnOff>,
        #[command(flatten)]
        health: HealthArgs,
    },
    /// Maps a floating IP to the load balancer's VIP.
    SetFloatingIp {
        /// Load balancer id or name.
        lb: String,
        /// Floating IP id or address.
        ip: String,
    },
}

/// On or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// The health check's flags.
#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// `none`, `tcp` or `http:/PATH`.
    #[arg(long)]
    health: Option<String>,
    /// Time between probes, ms (default 1000).
    #[arg(long)]
    interval_ms: Option<u32>,
    /// Probe timeout, ms (default 500).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Successes that bring a backend back (default 2).
    #[arg(long)]
    rise: Option<u32>,
    /// Failures that take it out (default 2).
    #[arg(long)]
    fall: Option<u32>,
}

impl HealthArgs {
    fn spec(&self) -> Result<Option<wire::HealthCheckSpec>> {
        let Some(h) = &self.health else {
            if self
                .interval_ms
                .or(self.timeout_ms)
                .or(self.rise)
                .or(self.fall)
                .is_some()
            {
                bail!("--interval-ms, --timeout-ms, --rise and --fall go with --health");
            }
            return Ok(None);
        };
        let (kind, path) = match h.as_str() {
            "none" => (wire::HealthKindName::None, None),
            "tcp" => (wire::HealthKindName::Tcp, None),
            x => match x.strip_prefix("http:") {
                Some(p) => (wire::HealthKindName::Http, Some(p.to_string())),
                None => bail!("--health is none, tcp or http:/PATH, not {x:?}"),
            },
        };
        Ok(Some(wire::HealthCheckSpec {
            kind,
            path,
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            rise: self.rise,
            fall: self.fall,
        }))
    }
}

fn listener(s: &str) -> Result<(wire::LbProtocolName, u16)> {
    let (p, n) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("a listener is tcp:PORT or udp:PORT, not {s:?}"))?;
    let proto = match p {
        "tcp" => wire::LbProtocolName::Tcp,
        "udp" => wire::LbProtocolName::Udp,
        _ => bail!("a listener's protocol is tcp or udp, not {p:?}"),
    };
    Ok((proto, n.parse().map_err(|_| anyhow!("bad port in {s:?}"))?))
}

fn backend(s: &str) -> Result<wire::BackendSpec> {
    let (rest, weight) = match s.split_once('@') {
        Some((r, w)) => (
            r,
            Some(w.parse().map_err(|_| anyhow!("bad weight in {s:?}"))?),
        ),
        None => (s, None),
    };
    let (who, target_port) = match rest.rsplit_once(':') {
        Some((w, p)) => (
            w,
            Some(p.parse().map_err(|_| anyhow!("bad port in {s:?}"))?),
        ),
        None => (rest, None),
    };
    let is_ip = who.parse::<std::net::Ipv4Addr>().is_ok();
    Ok(wire::BackendSpec {
        port: (!is_ip).then(|| who.to_string()),
        ip: is_ip.then(|| who.to_string()),
        target_port,
        weight,
    })
}

/// The listeners of a shown load balancer, as a request body's.
fn listeners_of(v: &Value) -> Vec<wire::ListenerSpec> {
    let mut out = Vec::new();
    for l in v["listeners"].as_array().into_iter().flatten() {
        let protocol = if l["protocol"] == "udp" {
            wire::LbProtocolName::Udp
        } else {
            wire::LbProtocolName::Tcp
        };
        let backends = l["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| wire::BackendSpec {
                port: b["port"].as_str().map(str::to_string),
                ip: b["port"]
                    .is_null()
                    .then(|| b["ip"].as_str().unwrap_or("").to_string()),
                target_port: b["target_port"].as_u64().map(|p| p as u16),
                weight: b["weight"].as_u64().map(|w| w as u32),
            })
            .collect();
        out.push(wire::ListenerSpec {
            protocol,
            port: l["port"].as_u64().unwrap_or(0) as u16,
            backends,
        });
    }
    out
}

/// Whether a shown backend is the one `who` names (an address, or a port's id as resolved).
fn is_backend(shown: &Value, who: &(Option<String>, String)) -> bool {
    match &who.0 {
        Some(id) => shown["port"] == id.as_str(),
        None => shown["ip"] == who.1.as_str(),
    }
}

const LB_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("VIP", "vip"),
    ("LISTENERS", "listeners_text"),
    ("AFFINITY", "session_affinity"),
    ("HEALTH", "health_text"),
    ("ID", "id"),
];

const BACKEND_COLS: &[(&str, &str)] = &[
    ("LISTENER", "listener"),
    ("BACKEND", "ip"),
    ("PORT", "target_port"),
    ("WEIGHT", "weight"),
    ("HEALTH", "health"),
];

/// Table cells for one load balancer.
fn summarize(v: &mut Value) {
    let ls: Vec<String> = v["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{}:{} ({})",
                l["protocol"].as_str().unwrap_or(""),
                l["port"],
                l["backends"].as_array().map_or(0, Vec::len)
            )
        })
        .collect();
    v["listeners_text"] = ls.join(",").into();
    v["health_text"] = match v["health_check"]["path"].as_str() {
        Some(p) => format!("http {p}"),
        None => v["health_check"]["kind"].as_str().unwrap_or("").to_string(),
    }
    .into();
}

impl Client {
    /// `strata load-balancer ...`.
    pub fn load_balancer(&self, cmd: LoadBalancerCmd) -> Result<()> {
        let lb = |n: &str| format!("/v1/load-balancers/{}", enc(n));
        let v = match cmd {
            LoadBalancerCmd::Create {
                name,
                network,
                subnet,
                vip,
                listeners,
                backends,
                affinity,
                health,
            } => {
                let bs = backends
                    .iter()
                    .map(|b| backend(b))
                    .collect::<Result<Vec<_>>>()?;
                let ls = listeners
                    .iter()
                    .map(|l| {
                        let (protocol, port) = listener(l)?;
                        Ok(wire::ListenerSpec {
                            protocol,
                            port,
                            backends: bs.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.req(
                    "POST",
                    &format!("/v1/networks/{}/load-balancers", enc(&network)),
                    body(&wire::CreateLoadBalancer {
                        name,
                        subnet,
                        vip,
                        listeners: ls,
                        session_affinity: affinity,
                        health_check: health.spec()?,
                    }),
                )?
            }
            LoadBalancerCmd::List { network } => {
                let mut v = self.req(
                    "GET",
                    &format!("/v1/networks/{}/load-balancers", enc(&network)),
                    None,
                )?;
                if self.out == Output::Table {
                    for x in v["items"].as_array_mut().into_iter().flatten() {
                        summarize(x);
                    }
                }
                return self.print(&v, LB_COLS);
            }
            LoadBalancerCmd::Show { lb: name } => self.req("GET", &lb(&name), None)?,
            LoadBalancerCmd::Delete { lb: name } => {
                self.req("DELETE", &lb(&name), None)?;
                return self.done(&format!("load balancer {name} deleted"));
            }
            LoadBalancerCmd::AddBackend {
                lb: name,
                backend: b,
                listener: only,
            } => {
                let cur = self.req("GET", &lb(&name), None)?;
                let only = only.as_deref().map(listener).transpose()?;
                let mut ls = listeners_of(&cur);
                for l in &mut ls {
                    if only.is_none_or(|(p, n)| p == l.protocol && n == l.port) {
                        l.backends.push(backend(&b)?);
                    }
                }
                self.put_listeners(&lb(&name), ls)?
            }
            LoadBalancerCmd::RemoveBackend {
                lb: name,
                backend: b,
            } => {
                let cur = self.req("GET", &lb(&name), None)?;
                let mut ls = listeners_of(&cur);
                let mut found = false;
                for (i, l) in ls.iter_mut().enumerate() {
                    let shown = cur["listeners"][i]["backends"].clone();
                    let who = self.backend_named(&b)?;
                    let mut j = 0;
                    l.backends.retain(|_| {
                        let keep = !is_backend(&shown[j], &who);
                        found |= !keep;
                        j += 1;
                        keep
                    });
                }
                if !found {
                    bail!("load balancer {name} has no backend {b}");
                }
                self.put_listeners(&lb(&name), ls)?
            }
            LoadBalancerCmd::Set {
                lb: name,
                weights,
                affinity,
                health,
            } => {
                let mut v = Value::Null;
                if !weights.is_empty() {
                    let cur = self.req("GET", &lb(&name), None)?;
                    let mut ls = listeners_of(&cur);
                    for w in &weights {
                        let (who, weight) = w
                            .split_once('=')
                            .ok_or_else(|| anyhow!("--weight is BACKEND=WEIGHT, not {w:?}"))?;
                        let weight: u32 =
                            weight.parse().map_err(|_| anyhow!("bad weight in {w:?}"))?;
                        let mut found = false;
                        let named = self.backend_named(who)?;
                        for (i, l) in ls.iter_mut().enumerate() {
                            for (j, x) in l.backends.iter_mut().enumerate() {
                                if is_backend(&cur["listeners"][i]["backends"][j], &named) {
                                    x.weight = Some(weight);
                                    found = true;
                                }
                            }
                        }
                        if !found {
                            bail!("load balancer {name} has no backend {who}");
                        }
                    }
                    v = self.put_listeners(&lb(&name), ls)?;
                }
                let h = health.spec()?;
                if affinity.is_some() || h.is_some() {
                    v = self.req(
                        "PUT",
                        &format!("{}/settings", lb(&name)),
                        body(&wire::SetLoadBalancerSettings {
                            session_affinity: affinity.map(|a| matches!(a, OnOff::On)),
                            health_check: h,
                        }),
                    )?;
                }
                if v.is_null() {
                    bail!("nothing to set: give --weight, --affinity or --health");
                }
                v
            }
            LoadBalancerCmd::SetFloatingIp { lb: name, ip } => {
                let f = self.req(
                    "PUT",
                    &format!("/v1/floating-ips/{}/port", enc(&ip)),
                    body(&wire::AssociateFloatingIp {
                        port: None,
                        load_balancer: Some(name),
                    }),
                )?;
                return self.print(
                    &f,
                    &[
                        ("IP", "ip"),
                        ("LOAD BALANCER", "load_balancer"),
                        ("ID", "id"),
                    ],
                );
            }
        };
        self.print_balancer(v)
    }

    /// A backend as named on the command line: a port (its id) or an address.
    fn backend_named(&self, who: &str) -> Result<(Option<String>, String)> {
        if who.parse::<std::net::Ipv4Addr>().is_ok() {
            return Ok((None, who.to_string()));
        }
        let p = self.req("GET", &format!("/v1/network-ports/{}", enc(who)), None)?;
        let id = p["id"].as_str().unwrap_or(who).to_string();
        Ok((Some(id), p["ip"].as_str().unwrap_or("").to_string()))
    }

    fn put_listeners(&self, path: &str, ls: Vec<wire::ListenerSpec>) -> Result<Value> {
        self.req(
            "PUT",
            &format!("{path}/listeners"),
            body(&wire::SetLoadBalancerListeners { listeners: ls }),
        )
    }

    fn print_balancer(&self, mut v: Value) -> Result<()> {
        if self.out != Output::Table {
            return self.print(&v, LB_COLS);
        }
        summarize(&mut v);
        self.print(&v, LB_COLS)?;
        let mut rows = Vec::new();
        for l in v["listeners"].as_array().into_iter().flatten() {
            for b in l["backends"].as_array().into_iter().flatten() {
                let mut b = b.clone();
                b["listener"] =
                    format!("{}:{}", l["protocol"].as_str().unwrap_or(""), l["port"]).into();
                rows.push(b);
            }
        }
        self.print(&json!({ "items": rows }), BACKEND_COLS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_listeners_parse() {
        let b = backend("10.0.0.7:8080@2").unwrap();
        assert_eq!(b.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!((b.target_port, b.weight), (Some(8080), Some(2)));
        let b = backend("web1").unwrap();
        assert_eq!(
            (b.port.as_deref(), b.ip, b.weight),
            (Some("web1"), None, None)
        );
        assert!(backend("web1@x").is_err());
        assert_eq!(listener("udp:53").unwrap(), (wire::LbProtocolName::Udp, 53));
        assert!(listener("sctp:1").is_err());
    }
}
