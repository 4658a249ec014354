//! `strata network ...`, `strata subnet ...`, `strata router ...`, `strata security-group ...`:
//! tenant networks. Objects are named by id or by name (within the caller's tenant).

use anyhow::{anyhow, Result};
use clap::Subcommand;
use serde_json::Value;
use strata_control::wire;

use super::{body, enc, Client, Output};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Creates a network (a VPC) with its address space; Strata picks the VNI.
    Create {
        /// Network name.
        name: String,
        /// Address space of its subnets, e.g. 10.0.0.0/16.
        #[arg(long)]
        cidr: String,
        /// Tenant (admins).
        #[arg(long)]
        tenant: Option<String>,
        /// An external network (admins): the outside, where routers take a leg and floating
        /// IPs come from.
        #[arg(long)]
        external: bool,
    },
    /// Lists networks.
    List {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a network.
    Show {
        /// Network id or name.
        network: String,
    },
    /// Deletes an empty network.
    Delete {
        /// Network id or name.
        network: String,
    },
    /// Adds a port: an address, a MAC and a device on this node (or `--node`'s) to plug a VM
    /// or namespace into (a TAP, or with `--veth` a veth pair whose peer goes to a container).
    AddPort {
        /// Network id or name.
        network: String,
        /// Port name.
        name: String,
        /// Subnet id or name.
        #[arg(long)]
        subnet: String,
        /// Address (default: the lowest free one).
        #[arg(long)]
        ip: Option<String>,
        /// MAC (default: allocated).
        #[arg(long)]
        mac: Option<String>,
        /// Security group (repeat; default: the tenant's `default` group).
        #[arg(long = "security-group", value_name = "GROUP")]
        security_groups: Vec<String>,
        /// A veth pair instead of a TAP: the peer is moved into a container with `ip link set
        /// PEER netns X`; established flows between veth ports run in the kernel fast path.
        #[arg(long)]
        veth: bool,
        /// The veth peer's interface name (default: the device's name + "p").
        #[arg(long, requires = "veth", value_name = "IFNAME")]
        peer: Option<String>,
        /// The node whose switch gets the device (default: the node answering; another node
        /// only in a cluster, where that node opens it).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Lists a network's ports.
    Ports {
        /// Network id or name.
        network: String,
    },
    /// Shows a port.
    ShowPort {
        /// Port id or name.
        port: String,
    },
    /// Deletes a port and its device.
    DelPort {
        /// Port id or name.
        port: String,
    },
    /// The flows tenant networks compiled to on this node, with their counters (admin).
    Flows,
    /// Caps what a network's ports send together, bits per second (`1G`; `none` clears):
    /// also the capacity its ports' guarantees share.
    SetBandwidth {
        /// Network id or name.
        network: String,
        /// Cap, e.g. 10G (K, M, G, T: powers of 1000), or none.
        #[arg(long)]
        cap: String,
    },
    /// Caps what a port sends and guarantees it a share of its network's cap under
    /// contention (work-conserving: an idle guarantee is lent out). Absent: none.
    SetPortBandwidth {
        /// Port id or name.
        port: String,
        /// Cap, e.g. 200M, or none.
        #[arg(long)]
        cap: Option<String>,
        /// Guarantee, e.g. 100M, or none.
        #[arg(long)]
        min: Option<String>,
    },
    /// A network's figures: per port bytes, packets, bandwidth over 1 s and 10 s, drops by
    /// reason, handshake round trips (from conntrack) and probes; and their sums.
    Stats {
        /// Network id or name.
        network: String,
    },
    /// Active probes: the switch sends echo requests from each port's gateway to the port
    /// and reports, per port, the answers lost and their round trips (switch to the port's
    /// endpoint and back).
    Probe {
        /// Network id or name.
        network: String,
        /// Rounds, one request to each port per round (1-20).
        #[arg(long, default_value_t = 5)]
        count: u64,
        /// Milliseconds between rounds (10-200).
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// Traces a packet from a port: which port, subnet, router and security-group rule it
    /// meets, conntrack's verdict, and where it ends.
    Trace {
        /// Port id or name the packet leaves.
        port: String,
        /// Destination address.
        #[arg(long)]
        to: String,
        /// any (an ICMP echo), tcp, udp or icmp.
        #[arg(long, default_value = "any")]
        protocol: String,
        /// Destination port (tcp, udp).
        #[arg(long)]
        port_number: Option<u64>,
        /// The state conntrack steps give: +new (default), +est, +est+rpl, ...
        #[arg(long)]
        ct_state: Option<String>,
    },
    /// Sets a port's security groups (none given: the tenant's `default`).
    SetGroups {
        /// Port id or name.
        port: String,
        /// Groups, ids or names.
        groups: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubnetCmd {
    /// Creates a subnet of a network.
    Create {
        /// Network id or name.
        network: String,
        /// Subnet name.
        name: String,
        /// Its range, inside the network's, e.g. 10.0.1.0/24.
        #[arg(long)]
        cidr: String,
        /// Gateway (default: the first host).
        #[arg(long)]
        gateway: Option<String>,
        /// Do not answer DHCP.
        #[arg(long)]
        no_dhcp: bool,
        /// DNS server handed out by DHCP (repeat).
        #[arg(long = "dns", value_name = "IP")]
        dns: Vec<String>,
    },
    /// Lists a network's subnets.
    List {
        /// Network id or name.
        network: String,
    },
    /// Shows a subnet.
    Show {
        /// Subnet id or name.
        subnet: String,
    },
    /// Deletes a subnet no port or router uses.
    Delete {
        /// Subnet id or name.
        subnet: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RouterCmd {
    /// Creates a router between subnets of one network.
    Create {
        /// Network id or name.
        network: String,
        /// Router name.
        name: String,
        /// Subnet to connect (repeat).
        #[arg(long = "subnet", value_name = "SUBNET")]
        subnets: Vec<String>,
    },
    /// Lists a network's routers.
    List {
        /// Network id or name.
        network: String,
    },
    /// Shows a router.
    Show {
        /// Router id or name.
        router: String,
    },
    /// Sets the subnets a router connects.
    SetSubnets {
        /// Router id or name.
        router: String,
        /// Subnets, ids or names.
        subnets: Vec<String>,
    },
    /// Gives a router a leg on an external network: an address there, SNAT of its subnets.
    SetGateway {
        /// Router id or name.
        router: String,
        /// External network id or name.
        network: String,
    },
    /// Takes a router's external leg away.
    ClearGateway {
        /// Router id or name.
        router: String,
    },
    /// Deletes a router.
    Delete {
        /// Router id or name.
        router: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FloatingIpCmd {
    /// Allocates a floating IP on an external network, mapped 1:1 to a port if given.
    Create {
        /// External network id or name.
        network: String,
        /// Port id or name.
        #[arg(long)]
        port: Option<String>,
        /// Tenant (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Lists floating IPs.
    List {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a floating IP.
    Show {
        /// Floating IP id or address.
        ip: String,
    },
    /// Maps a floating IP to a port.
    Associate {
        /// Floating IP id or address.
        ip: String,
        /// Port id or name.
        port: String,
    },
    /// Frees a floating IP of its port.
    Disassociate {
        /// Floating IP id or address.
        ip: String,
    },
    /// Releases a floating IP.
    Delete {
        /// Floating IP id or address.
        ip: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecurityGroupCmd {
    /// Creates a group: all egress allowed, no ingress (add rules to allow).
    Create {
        /// Group name.
        name: String,
        /// Tenant (admins).
        #[arg(long)]
        tenant: Option<String>,
        /// When rules change, judge open connections again (default: they keep flowing).
        #[arg(long)]
        reevaluate_existing: bool,
    },
    /// Lists groups.
    List {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a group and its rules.
    Show {
        /// Group id or name.
        group: String,
    },
    /// Deletes a group no port uses.
    Delete {
        /// Group id or name.
        group: String,
    },
    /// Adds an allow rule.
    AddRule {
        /// Group id or name.
        group: String,
        /// ingress or egress.
        #[arg(long, default_value = "ingress")]
        direction: String,
        /// any, tcp, udp or icmp.
        #[arg(long, default_value = "any")]
        protocol: String,
        /// Destination port or range (tcp, udp): 80 or 8000-8099.
        #[arg(long)]
        port: Option<String>,
        /// The other end's range.
        #[arg(long)]
        remote_cidr: Option<String>,
        /// The other end's group (id or name).
        #[arg(long)]
        remote_group: Option<String>,
    },
    /// Removes a rule.
    DeleteRule {
        /// Group id or name.
        group: String,
        /// Rule id (r1, r2, ...).
        rule: String,
    },
}

/// Bits per second: `200M`, `10G` (powers of 1000), or `none`.
fn bits(v: Option<String>, flag: &str) -> Result<Option<u64>> {
    match v.as_deref() {
        None | Some("none") => Ok(None),
        Some(s) => strata_place::inventory::parse_quantity(s)
            .map(Some)
            .ok_or_else(|| anyhow!("invalid_argument: --{flag} {s:?}: bits per second such as 200M or 10G, or none")),
    }
}

fn protocol_arg(p: &str) -> Result<wire::RuleProtocol> {
    Ok(match p {
        "any" => wire::RuleProtocol::Any,
        "tcp" => wire::RuleProtocol::Tcp,
        "udp" => wire::RuleProtocol::Udp,
        "icmp" => wire::RuleProtocol::Icmp,
        p => return Err(anyhow!("--protocol {p:?}: any, tcp, udp or icmp")),
    })
}

fn parse_ports(p: &str) -> Result<(u64, u64)> {
    let bad = || anyhow!("--port {p:?}: a port (80) or a range (8000-8099)");
    let (lo, hi) = match p.split_once('-') {
        Some((a, b)) => (a, b),
        None => (p, p),
    };
    Ok((
        lo.parse().map_err(|_| bad())?,
        hi.parse().map_err(|_| bad())?,
    ))
}

const NET_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("CIDR", "cidr"),
    ("VNI", "vni"),
    ("TENANT", "tenant"),
    ("ID", "id"),
];
const SUBNET_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("CIDR", "cidr"),
    ("GATEWAY", "gateway"),
    ("DHCP", "dhcp"),
    ("ID", "id"),
];
const PORT_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("IP", "ip"),
    ("MAC", "mac"),
    ("DEVICE", "device"),
    ("PEER", "veth_peer"),
    ("NODE", "node"),
    ("ID", "id"),
];
const ROUTER_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("SUBNETS", "subnets"),
    ("GATEWAY", "gateway.ip"),
    ("ID", "id"),
];
const FIP_COLS: &[(&str, &str)] = &[
    ("IP", "ip"),
    ("PORT", "port"),
    ("NETWORK", "network"),
    ("TENANT", "tenant"),
    ("ID", "id"),
];
const GROUP_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("RULES", "n_rules"),
    ("TENANT", "tenant"),
    ("ID", "id"),
];
const RULE_COLS: &[(&str, &str)] = &[
    ("RULE", "id"),
    ("DIRECTION", "direction"),
    ("PROTOCOL", "protocol"),
    ("PORTS", "ports"),
    ("REMOTE", "remote"),
];

impl Client {
    /// `strata network ...`.
    pub fn network(&self, cmd: NetworkCmd) -> Result<()> {
        let net = |n: &str| format!("/v1/networks/{}", enc(n));
        let port = |n: &str| format!("/v1/network-ports/{}", enc(n));
        match cmd {
            NetworkCmd::Create {
                name,
                cidr,
                tenant,
                external,
            } => {
                let v = self.req(
                    "POST",
                    "/v1/networks",
                    body(&wire::CreateNetwork {
                        name,
                        cidr,
                        tenant,
                        external,
                    }),
                )?;
                self.print(&v, NET_COLS)
            }
            NetworkCmd::List { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                self.print(
                    &self.req("GET", &format!("/v1/networks{q}"), None)?,
                    NET_COLS,
                )
            }
            NetworkCmd::Show { network } => {
                self.print(&self.req("GET", &net(&network), None)?, NET_COLS)
            }
            NetworkCmd::Delete { network } => {
                self.req("DELETE", &net(&network), None)?;
                self.done(&format!("network {network} deleted"))
            }
            NetworkCmd::AddPort {
                network,
                name,
                subnet,
                ip,
                mac,
                security_groups,
                veth,
                peer,
                node,
            } => {
                let v = self.req(
                    "POST",
                    &format!("{}/ports", net(&network)),
                    body(&wire::CreateNetworkPort {
                        name,
                        subnet,
                        ip,
                        mac,
                        security_groups,
                        veth: veth.then_some(wire::VethSettings { peer }),
                        node,
                    }),
                )?;
                if self.out == Output::Table {
                    let s = self.req(
                        "GET",
                        &format!("/v1/subnets/{}", enc(str_of(&v["subnet"]))),
                        None,
                    )?;
                    let prefix = str_of(&s["cidr"]).rsplit('/').next().unwrap_or("");
                    let device = match v["veth_peer"].as_str() {
                        Some(peer) => {
                            format!("veth peer {peer} (host end {})", str_of(&v["device"]))
                        }
                        None => format!("TAP device {}", str_of(&v["device"])),
                    };
                    outln!(
                        "port {} created: plug into {device} (MAC {}, address {}/{prefix}, gateway {}{})",
                        str_of(&v["name"]),
                        str_of(&v["mac"]),
                        str_of(&v["ip"]),
                        str_of(&s["gateway"]),
                        if s["dhcp"] == Value::Bool(true) { ", or by DHCP" } else { "" }
                    );
                    Ok(())
                } else {
                    self.print(&v, PORT_COLS)
                }
            }
            NetworkCmd::Ports { network } => self.print(
                &self.req("GET", &format!("{}/ports", net(&network)), None)?,
                PORT_COLS,
            ),
            NetworkCmd::ShowPort { port: p } => {
                self.print(&self.req("GET", &port(&p), None)?, PORT_COLS)
            }
            NetworkCmd::DelPort { port: p } => {
                self.req("DELETE", &port(&p), None)?;
                self.done(&format!("port {p} deleted"))
            }
            NetworkCmd::Trace {
                port: p,
                to,
                protocol,
                port_number,
                ct_state,
            } => {
                let v = self.req(
                    "POST",
                    &format!("{}/trace", port(&p)),
                    body(&wire::TraceNetworkPacket {
                        to,
                        protocol: Some(protocol_arg(&protocol)?),
                        port: port_number,
                        ct_state,
                    }),
                )?;
                if self.out != Output::Table {
                    return self.print(&v, &[]);
                }
                outln!("{}", str_of(&v["packet"]));
                for st in v["steps"].as_array().into_iter().flatten() {
                    outln!("  table {:>2}  {}", st["table"], str_of(&st["what"]));
                }
                outln!("{}", str_of(&v["verdict"]));
                Ok(())
            }
            NetworkCmd::SetBandwidth { network, cap } => {
                let v = self.req(
                    "PUT",
                    &format!("{}/bandwidth", net(&network)),
                    body(&wire::SetNetworkBandwidth {
                        cap_bps: bits(Some(cap), "cap")?,
                    }),
                )?;
                self.print(&v, NET_COLS)
            }
            NetworkCmd::SetPortBandwidth { port: p, cap, min } => {
                let v = self.req(
                    "PUT",
                    &format!("{}/bandwidth", port(&p)),
                    body(&wire::SetPortBandwidth {
                        cap_bps: bits(cap, "cap")?,
                        min_bps: bits(min, "min")?,
                    }),
                )?;
                self.print(&v, PORT_COLS)
            }
            NetworkCmd::Stats { network } => {
                let mut v = self.req("GET", &format!("{}/stats", net(&network)), None)?;
                if self.out != Output::Table {
                    return self.print(&v, &[]);
                }
                let mut rows: Vec<Value> = v["ports"].as_array().cloned().unwrap_or_default();
                let mut total = v["total"].take();
                total["port"] = "(total)".into();
                rows.push(total);
                for r in &mut rows {
                    let drops: Vec<String> = r["drops"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, n)| format!("{k}={n}"))
                        .collect();
                    r["drop_list"] = drops.join(",").into();
                    for k in ["rx_bps_1s", "tx_bps_1s", "rx_bps_10s", "tx_bps_10s"] {
                        let mbit = r[k].as_u64().unwrap_or(0) as f64 / 1e6;
                        r[format!("{k}_m")] = format!("{mbit:.1}").into();
                    }
                    r["hs"] = round_trips(&r["handshake_rtt"]).into();
                    let (sent, ans) = (
                        r["probes_sent"].as_u64().unwrap_or(0),
                        r["probes_answered"].as_u64().unwrap_or(0),
                    );
                    r["pr"] = if sent == 0 {
                        "-".to_string()
                    } else {
                        format!(
                            "{} lost of {sent}, {}",
                            sent.saturating_sub(ans),
                            round_trips(&r["probe_rtt"])
                        )
                    }
                    .into();
                }
                self.print(
                    &serde_json::json!({ "items": rows }),
                    &[
                        ("PORT", "port"),
                        ("RX PKTS", "rx_packets"),
                        ("RX BYTES", "rx_bytes"),
                        ("TX PKTS", "tx_packets"),
                        ("TX BYTES", "tx_bytes"),
                        ("RX Mb/s 1s", "rx_bps_1s_m"),
                        ("TX Mb/s 1s", "tx_bps_1s_m"),
                        ("RX Mb/s 10s", "rx_bps_10s_m"),
                        ("TX Mb/s 10s", "tx_bps_10s_m"),
                        ("DROPS", "drop_list"),
                        ("HANDSHAKE RTT", "hs"),
                        ("PROBES", "pr"),
                    ],
                )
            }
            NetworkCmd::Probe {
                network,
                count,
                interval_ms,
            } => {
                let mut v = self.req(
                    "POST",
                    &format!("{}/probe", net(&network)),
                    body(&wire::ProbeNetwork {
                        count: Some(count),
                        interval_ms: Some(interval_ms),
                    }),
                )?;
                if self.out != Output::Table {
                    return self.print(&v, &[]);
                }
                let mut rows: Vec<Value> =
                    v["ports"].take().as_array().cloned().unwrap_or_default();
                for r in &mut rows {
                    r["loss"] = format!(
                        "{:.1}%",
                        r["loss_ppm"].as_u64().unwrap_or(0) as f64 / 10_000.0
                    )
                    .into();
                    r["rt"] = round_trips(&r["rtt"]).into();
                }
                self.print(
                    &serde_json::json!({ "items": rows }),
                    &[
                        ("PORT", "port"),
                        ("IP", "ip"),
                        ("SENT", "sent"),
                        ("ANSWERED", "answered"),
                        ("LOSS", "loss"),
                        ("RTT", "rt"),
                    ],
                )
            }
            NetworkCmd::Flows => {
                let v = self.req("GET", "/v1/network-flows", None)?;
                if self.out == Output::Table {
                    for f in v["flows"].as_array().into_iter().flatten() {
                        outln!("{}", str_of(f));
                    }
                    Ok(())
                } else {
                    self.print(&v, &[])
                }
            }
            NetworkCmd::SetGroups { port: p, groups } => {
                let v = self.req(
                    "PUT",
                    &format!("{}/security-groups", port(&p)),
                    body(&wire::SetSecurityGroups {
                        security_groups: groups,
                    }),
                )?;
                self.print(&v, PORT_COLS)
            }
        }
    }

    /// `strata subnet ...`.
    pub fn subnet(&self, cmd: SubnetCmd) -> Result<()> {
        let sub = |n: &str| format!("/v1/subnets/{}", enc(n));
        match cmd {
            SubnetCmd::Create {
                network,
                name,
                cidr,
                gateway,
                no_dhcp,
                dns,
            } => {
                let v = self.req(
                    "POST",
                    &format!("/v1/networks/{}/subnets", enc(&network)),
                    body(&wire::CreateSubnet {
                        name,
                        cidr,
                        gateway,
                        dhcp: Some(!no_dhcp),
                        dns,
                    }),
                )?;
                self.print(&v, SUBNET_COLS)
            }
            SubnetCmd::List { network } => self.print(
                &self.req(
                    "GET",
                    &format!("/v1/networks/{}/subnets", enc(&network)),
                    None,
                )?,
                SUBNET_COLS,
            ),
            SubnetCmd::Show { subnet } => {
                self.print(&self.req("GET", &sub(&subnet), None)?, SUBNET_COLS)
            }
            SubnetCmd::Delete { subnet } => {
                self.req("DELETE", &sub(&subnet), None)?;
                self.done(&format!("subnet {subnet} deleted"))
            }
        }
    }

    /// `strata router ...`.
    pub fn router(&self, cmd: RouterCmd) -> Result<()> {
        let rt = |n: &str| format!("/v1/routers/{}", enc(n));
        let show = |mut v: Value| {
            if self.out != Output::Table {
                return self.print(&v, ROUTER_COLS);
            }
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                for r in items {
                    flatten_list(r, "subnets");
                }
            } else {
                flatten_list(&mut v, "subnets");
            }
            self.print(&v, ROUTER_COLS)
        };
        match cmd {
            RouterCmd::Create {
                network,
                name,
                subnets,
            } => show(self.req(
                "POST",
                &format!("/v1/networks/{}/routers", enc(&network)),
                body(&wire::CreateRouter { name, subnets }),
            )?),
            RouterCmd::List { network } => show(self.req(
                "GET",
                &format!("/v1/networks/{}/routers", enc(&network)),
                None,
            )?),
            RouterCmd::Show { router } => show(self.req("GET", &rt(&router), None)?),
            RouterCmd::SetSubnets { router, subnets } => show(self.req(
                "PUT",
                &format!("{}/subnets", rt(&router)),
                body(&wire::SetRouterSubnets { subnets }),
            )?),
            RouterCmd::SetGateway { router, network } => show(self.req(
                "PUT",
                &format!("{}/gateway", rt(&router)),
                body(&wire::SetRouterGateway {
                    network: Some(network),
                }),
            )?),
            RouterCmd::ClearGateway { router } => show(self.req(
                "PUT",
                &format!("{}/gateway", rt(&router)),
                body(&wire::SetRouterGateway { network: None }),
            )?),
            RouterCmd::Delete { router } => {
                self.req("DELETE", &rt(&router), None)?;
                self.done(&format!("router {router} deleted"))
            }
        }
    }
    /// `strata floating-ip ...`.
    pub fn floating_ip(&self, cmd: FloatingIpCmd) -> Result<()> {
        let fip = |n: &str| format!("/v1/floating-ips/{}", enc(n));
        let v = match cmd {
            FloatingIpCmd::Create {
                network,
                port,
                tenant,
            } => self.req(
                "POST",
                "/v1/floating-ips",
                body(&wire::CreateFloatingIp {
                    network,
                    port,
                    tenant,
                }),
            )?,
            FloatingIpCmd::List { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                self.req("GET", &format!("/v1/floating-ips{q}"), None)?
            }
            FloatingIpCmd::Show { ip } => self.req("GET", &fip(&ip), None)?,
            FloatingIpCmd::Associate { ip, port } => self.req(
                "PUT",
                &format!("{}/port", fip(&ip)),
                body(&wire::AssociateFloatingIp {
                    port: Some(port),
                    load_balancer: None,
                }),
            )?,
            FloatingIpCmd::Disassociate { ip } => self.req(
                "PUT",
                &format!("{}/port", fip(&ip)),
                body(&wire::AssociateFloatingIp {
                    port: None,
                    load_balancer: None,
                }),
            )?,
            FloatingIpCmd::Delete { ip } => {
                self.req("DELETE", &fip(&ip), None)?;
                return self.done(&format!("floating IP {ip} released"));
            }
        };
        self.print(&v, FIP_COLS)
    }

    /// `strata security-group ...`.
    pub fn security_group(&self, cmd: SecurityGroupCmd) -> Result<()> {
        let grp = |n: &str| format!("/v1/security-groups/{}", enc(n));
        match cmd {
            SecurityGroupCmd::Create {
                name,
                tenant,
                reevaluate_existing,
            } => {
                let v = self.req(
                    "POST",
                    "/v1/security-groups",
                    body(&wire::CreateSecurityGroup {
                        name,
                        tenant,
                        reevaluate_existing,
                    }),
                )?;
                self.print_security_group(v)
            }
            SecurityGroupCmd::List { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                let mut v = self.req("GET", &format!("/v1/security-groups{q}"), None)?;
                if self.out == Output::Table {
                    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                        for g in items {
                            g["n_rules"] = g["rules"].as_array().map_or(0, Vec::len).into();
                        }
                    }
                }
                self.print(&v, GROUP_COLS)
            }
            SecurityGroupCmd::Show { group } => {
                self.print_security_group(self.req("GET", &grp(&group), None)?)
            }
            SecurityGroupCmd::Delete { group } => {
                self.req("DELETE", &grp(&group), None)?;
                self.done(&format!("security group {group} deleted"))
            }
            SecurityGroupCmd::AddRule {
                group,
                direction,
                protocol,
                port,
                remote_cidr,
                remote_group,
            } => {
                let direction = match direction.as_str() {
                    "ingress" => wire::RuleDirection::Ingress,
                    "egress" => wire::RuleDirection::Egress,
                    d => return Err(anyhow!("--direction {d:?}: ingress or egress")),
                };
                let protocol = protocol_arg(&protocol)?;
                let ports = port.as_deref().map(parse_ports).transpose()?;
                let v = self.req(
                    "POST",
                    &format!("{}/rules", grp(&group)),
                    body(&wire::CreateRule {
                        direction,
                        protocol: Some(protocol),
                        port_min: ports.map(|p| p.0),
                        port_max: ports.map(|p| p.1),
                        remote_cidr,
                        remote_group,
                    }),
                )?;
                self.print_security_group(v)
            }
            SecurityGroupCmd::DeleteRule { group, rule } => {
                let v = self.req(
                    "DELETE",
                    &format!("{}/rules/{}", grp(&group), enc(&rule)),
                    None,
                )?;
                self.print_security_group(v)
            }
        }
    }

    /// A group: as JSON whole, as a table its rules.
    fn print_security_group(&self, v: Value) -> Result<()> {
        if self.out != Output::Table {
            return self.print(&v, GROUP_COLS);
        }
        outln!(
            "security group {} ({})",
            str_of(&v["name"]),
            str_of(&v["id"])
        );
        let rules: Vec<Value> = v["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                r["ports"] = match (r["port_min"].as_u64(), r["port_max"].as_u64()) {
                    (Some(a), Some(b)) if a == b => a.to_string().into(),
                    (Some(a), Some(b)) => format!("{a}-{b}").into(),
                    _ => "all".into(),
                };
                r["remote"] = match (r["remote_cidr"].as_str(), r["remote_group"].as_str()) {
                    (Some(c), _) => c.into(),
                    (_, Some(g)) => format!("group {g}").into(),
                    _ => "anywhere".into(),
                };
                r
            })
            .collect();
        self.print(&serde_json::json!({ "items": rules }), RULE_COLS)
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A list field shown as one comma-separated cell.
fn flatten_list(v: &mut Value, field: &str) {
    if let Some(a) = v[field].as_array() {
        let s: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        v[field] = s.join(",").into();
    }
}

/// A round-trip summary for a table: `mean 48µs, p50 ≤64µs, p99 ≤128µs (n=12)`, or `-`.
/// Quantiles are bucket bounds (powers of two of microseconds), hence the `≤`.
fn round_trips(v: &Value) -> String {
    let n = v["samples"].as_u64().unwrap_or(0);
    if n == 0 {
        return "-".to_string();
    }
    let us = |k: &str| match v[k].as_u64() {
        Some(u64::MAX) => ">16s".to_string(),
        Some(x) if x >= 10_000 => format!("{}ms", x / 1000),
        Some(x) => format!("{x}µs"),
        None => "-".to_string(),
    };
    format!(
        "mean {}, p50 ≤{}, p99 ≤{} (n={n})",
        us("mean_us"),
        us("p50_us"),
        us("p99_us")
    )
}
