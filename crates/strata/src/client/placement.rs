//! `strata node ...` and `strata job ...`: the placement pool's nodes and the jobs on it, with
//! a job's slice (`--network`, `--volume NAME=clone:GROUP`). Quantities take `K/M/G/T`
//! (powers of 1000) or `Ki/Mi/Gi/Ti`: `--memory 512G` is bytes, `--bandwidth 100G` bits per
//! second, `--storage-throughput 5G` bytes per second.

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde_json::Value;
use strata_control::wire;

use super::{body, enc, Client, Output};

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Lists the nodes (real and hypothetical) with what runs on them.
    List,
    /// Shows a node's inventory: CPU, memory, GPUs and islands, NICs, devices, labels.
    Show {
        /// Node name.
        name: String,
    },
    /// Declares hypothetical nodes for planning from a YAML inventory (admin).
    Declare {
        /// The inventory file (`nodes: [{name, cpu, memory, gpus, islands, nic, ...}]`).
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Cordons a node: it takes no new jobs (admin).
    Cordon {
        /// Node name.
        name: String,
    },
    /// Uncordons a node; waiting jobs that now fit start (admin).
    Uncordon {
        /// Node name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Creates a job (all of it or none); it waits in the queue while it does not fit.
    Create(Box<CreateJobArgs>),
    /// Lists jobs.
    List {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a job: where it runs, or why it waits.
    Show {
        /// Job name.
        name: String,
        /// Tenant (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Deletes a job; waiting jobs that now fit start.
    Delete {
        /// Job name.
        name: String,
        /// Tenant (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `strata job create`'s arguments.
#[derive(clap::Args, Debug)]
pub struct CreateJobArgs {
    /// Job name.
    name: String,
    /// GPUs, all of one model.
    #[arg(long, default_value_t = 0)]
    gpus: u64,
    /// GPU model (default: any one model).
    #[arg(long)]
    gpu_model: Option<String>,
    /// CPU cores.
    #[arg(long, default_value_t = 0)]
    cpu: u64,
    /// Memory, e.g. 512G or 64Gi.
    #[arg(long)]
    memory: Option<String>,
    /// Network bandwidth in bits per second, e.g. 100G.
    #[arg(long)]
    bandwidth: Option<String>,
    /// Storage throughput in bytes per second, e.g. 5G.
    #[arg(long)]
    storage_throughput: Option<String>,
    /// All GPUs in one NVLink island.
    #[arg(long)]
    same_island: bool,
    /// May span nodes sharing this label's value (e.g. rack) when no node holds it alone.
    #[arg(long)]
    same_label: Option<String>,
    /// Priority: higher goes first.
    #[arg(long, default_value_t = 0)]
    priority: u64,
    /// Tenant (admins).
    #[arg(long)]
    tenant: Option<String>,
    /// Only plan: where it would run or why it would wait, and the placement revision;
    /// changes nothing.
    #[arg(long)]
    dry_run: bool,
    /// Create only if the placement revision is still this one (from a --dry-run).
    #[arg(long)]
    revision: Option<u64>,
    /// A tenant network for the job's ports: one per placed part (`job-NAME`), with the
    /// part's bandwidth guaranteed (a share of the network's cap).
    #[arg(long)]
    network: Option<String>,
    /// The subnet of --network (default: its only one).
    #[arg(long, requires = "network")]
    subnet: Option<String>,
    /// A cap on each of the job's ports in bits per second, e.g. 200G.
    #[arg(long, requires = "network")]
    port_cap: Option<String>,
    /// Clones of a checkpoint group's members for the job, named NAME-MEMBER:
    /// `NAME=clone:GROUP` (or `clone:GROUP`, named after the job). Repeatable.
    #[arg(long = "volume", value_name = "NAME=clone:GROUP")]
    volumes: Vec<String>,
}

fn quantity(v: Option<String>, flag: &str) -> Result<Option<u64>> {
    v.map(|s| {
        strata_place::inventory::parse_quantity(&s).ok_or_else(|| {
            anyhow!(
                "invalid_argument: --{flag} {s:?}: a number with K, M, G, T (or Ki, Mi, Gi, Ti)"
            )
        })
    })
    .transpose()
}

/// `NAME=clone:GROUP` or `clone:GROUP`.
fn volume_arg(s: &str) -> Result<wire::JobVolume> {
    let (name, rest) = match s.split_once('=') {
        Some((n, r)) => (Some(n.to_string()), r),
        None => (None, s),
    };
    match rest.strip_prefix("clone:") {
        Some(g) if !g.is_empty() && name.as_deref() != Some("") => Ok(wire::JobVolume {
            name,
            clone_group: g.to_string(),
        }),
        _ => Err(anyhow!(
            "invalid_argument: --volume {s:?}: NAME=clone:GROUP (or clone:GROUP)"
        )),
    }
}

fn tenant_query(tenant: &Option<String>) -> String {
    tenant
        .as_deref()
        .map_or_else(String::new, |t| format!("?tenant={}", enc(t)))
}

impl Client {
    /// `strata node ...`.
    pub fn node(&self, cmd: NodeCmd) -> Result<()> {
        let cols = [
            ("NAME", "name"),
            ("HYPOTHETICAL", "hypothetical"),
            ("CORDONED", "cordoned"),
            ("STATE", "state"),
            ("LEADER", "leader"),
            ("CPU", "cpu_cores"),
            ("MEMORY", "memory_bytes:size"),
            ("GPUS", "gpu_count"),
            ("GPUS USED", "used_gpus"),
            ("JOBS", "jobs"),
        ];
        match cmd {
            NodeCmd::List => self.print(&self.req("GET", "/v1/nodes", None)?, &cols),
            NodeCmd::Show { name } => {
                let v = self.req("GET", &format!("/v1/nodes/{}", enc(&name)), None)?;
                self.print(&v, &cols)?;
                if matches!(self.out, Output::Table) {
                    for g in v["gpus"].as_array().into_iter().flatten() {
                        outln!(
                            "gpus: {} x {}",
                            g["count"],
                            g["model"].as_str().unwrap_or("")
                        );
                    }
                    outln!("islands: {}", v["islands"]);
                    outln!("nic: {} bit/s", v["nic_bps"]);
                    for d in v["storage"].as_array().into_iter().flatten() {
                        outln!(
                            "device {}: {} {} free of {}",
                            d["name"].as_str().unwrap_or(""),
                            d["class"].as_str().unwrap_or(""),
                            d["free_bytes"],
                            d["capacity_bytes"]
                        );
                    }
                    outln!("labels: {}", v["labels"]);
                }
                Ok(())
            }
            NodeCmd::Declare { file } => {
                let inventory = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let v = self.req("POST", "/v1/nodes", body(&wire::DeclareNodes { inventory }))?;
                self.print(&v, &cols)
            }
            NodeCmd::Cordon { name } => {
                let v = self.req("POST", &format!("/v1/nodes/{}/cordon", enc(&name)), None)?;
                self.print(&v, &cols)
            }
            NodeCmd::Uncordon { name } => {
                let v = self.req("POST", &format!("/v1/nodes/{}/uncordon", enc(&name)), None)?;
                self.print(&v, &cols)
            }
        }
    }

    /// `strata job ...`.
    pub fn job(&self, cmd: JobCmd) -> Result<()> {
        let cols = [
            ("TENANT", "tenant"),
            ("NAME", "name"),
            ("STATE", "state"),
            ("GPUS", "gpus"),
            ("CPU", "cpu_cores"),
            ("NODES", "nodes"),
            ("WHY", "explanation.message"),
        ];
        match cmd {
            JobCmd::Create(args) => {
                let CreateJobArgs {
                    name,
                    gpus,
                    gpu_model,
                    cpu,
                    memory,
                    bandwidth,
                    storage_throughput,
                    same_island,
                    same_label,
                    priority,
                    tenant,
                    dry_run,
                    revision,
                    network,
                    subnet,
                    port_cap,
                    volumes,
                } = *args;
                let req = wire::CreateJob {
                    name,
                    tenant,
                    gpus: Some(gpus),
                    gpu_model,
                    cpu_cores: Some(cpu),
                    memory_bytes: quantity(memory, "memory")?,
                    bandwidth_bps: quantity(bandwidth, "bandwidth")?,
                    storage_bps: quantity(storage_throughput, "storage-throughput")?,
                    same_island: Some(same_island),
                    same_label,
                    priority: Some(priority),
                    revision,
                    network,
                    subnet,
                    port_cap_bps: quantity(port_cap, "port-cap")?,
                    volumes: volumes
                        .iter()
                        .map(|v| volume_arg(v.as_str()))
                        .collect::<Result<_>>()?,
                };
                if dry_run {
                    let v = self.req("POST", "/v1/plans", body(&req))?;
                    return self.print_plan(&v);
                }
                let v = self.req("POST", "/v1/jobs", body(&req))?;
                self.print(&v, &cols)?;
                self.print_slice(&v["slice"])
            }
            JobCmd::List { tenant } => self.print(
                &self.req("GET", &format!("/v1/jobs{}", tenant_query(&tenant)), None)?,
                &cols,
            ),
            JobCmd::Show { name, tenant } => {
                let v = self.req(
                    "GET",
                    &format!("/v1/jobs/{}{}", enc(&name), tenant_query(&tenant)),
                    None,
                )?;
                self.print(&v, &cols)?;
                self.print_slice(&v["slice"])
            }
            JobCmd::Delete { name, tenant } => {
                self.req(
                    "DELETE",
                    &format!("/v1/jobs/{}{}", enc(&name), tenant_query(&tenant)),
                    None,
                )?;
                self.done(&format!("job {name} deleted"))
            }
        }
    }

    /// A job's slice under its row (tables only: JSON and YAML carry it whole): the ports
    /// with the TAP to plug, the volumes with their ids and URIs.
    fn print_slice(&self, s: &Value) -> Result<()> {
        if !matches!(self.out, Output::Table) || s.is_null() {
            return Ok(());
        }
        let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
        let rate = |v: &Value| v.as_u64().map_or("-".to_string(), |b| format!("{b} bit/s"));
        outln!(
            "slice: {} (network {}, subnet {})",
            text(&s["state"]),
            text(&s["network"]),
            text(&s["subnet"])
        );
        for p in s["ports"].as_array().into_iter().flatten() {
            outln!(
                "  port {} on {}: TAP {}, {} {}, guaranteed {}, cap {}",
                text(&p["name"]),
                text(&p["node"]),
                text(&p["device"]),
                text(&p["ip"]),
                text(&p["mac"]),
                rate(&p["min_bps"]),
                rate(&p["cap_bps"])
            );
        }
        for x in s["volumes"].as_array().into_iter().flatten() {
            outln!(
                "  volume {} ({}) from group {}: {}",
                text(&x["name"]),
                text(&x["id"]),
                text(&x["group"]),
                x["uri"].as_str().unwrap_or("not attached")
            );
        }
        Ok(())
    }

    fn print_plan(&self, v: &Value) -> Result<()> {
        if !matches!(self.out, Output::Table) {
            return self.print(v, &[]);
        }
        let job = format!(
            "{}/{}",
            v["tenant"].as_str().unwrap_or(""),
            v["name"].as_str().unwrap_or("")
        );
        if v["fits"].as_bool() == Some(true) {
            outln!("{job} would start now (dry run: nothing changed)");
            for p in v["placement"].as_array().into_iter().flatten() {
                outln!(
                    "  on {}: GPUs {}, {} cores",
                    p["node"].as_str().unwrap_or(""),
                    p["gpus"],
                    p["cpu_cores"]
                );
            }
            for b in v["bandwidth"].as_array().into_iter().flatten() {
                outln!(
                    "  bandwidth on {}: {} bit/s guaranteed (up to {} when the link is busy); \
                     its NIC {} bit/s, {} guaranteed with it",
                    b["node"].as_str().unwrap_or(""),
                    b["guarantee_bps"],
                    b["rate_bps"],
                    b["nic_bps"],
                    b["nic_guaranteed_bps"]
                );
            }
        } else {
            outln!("{job} would wait in the queue (dry run: nothing changed)");
            let e = &v["explanation"];
            outln!("  why: {}", e["message"].as_str().unwrap_or(""));
            outln!("  binding: {}", e["binding"]);
        }
        self.print_slice(&v["slice"])?;
        outln!(
            "plan made at placement revision {}: create with --revision {} to apply it only if nothing changed",
            v["revision"],
            v["revision"]
        );
        Ok(())
    }
}
