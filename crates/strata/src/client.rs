//! The CLI side: commands that call the daemon's REST API and print tables, JSON or YAML.
//! On an API error it prints the server's code and message and exits non-zero.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use strata_control::wire;
use strata_types::format_size;

use crate::config::{Target, TokenSource};

mod apply;
mod balancers;
mod complete;
mod events;
mod export;
mod get;
mod networks;
mod placement;
mod rebalance;
mod schedules;
pub use apply::ApplyArgs;
pub use balancers::LoadBalancerCmd;
pub use complete::{kind_of, positional_at, BASH_HOOK};
pub use events::{print_alerts, EventsArgs};
pub use networks::{FloatingIpCmd, NetworkCmd, RouterCmd, SecurityGroupCmd, SubnetCmd};
pub use placement::{JobCmd, NodeCmd};
pub use schedules::ScheduleCmd;

/// What a 401 answer tells the user to do.
const TOKEN_HINT: &str = "Pass a token with --token or STRATA_TOKEN, or save one with \
     `strata login --endpoint URL --token TOKEN`; a new daemon's admin token is in \
     DATA_DIR/admin.token (and in the CLI config its first start wrote), and \
     `strata token create` makes tenant tokens";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON (stable: scripts parse it).
    Json,
    /// YAML.
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Creates a tenant.
    Create {
        /// Tenant name.
        name: String,
        /// Capacity quota (e.g. 1T).
        #[arg(long)]
        capacity: Option<String>,
        /// Volume count quota.
        #[arg(long)]
        max_volumes: Option<u64>,
        /// Snapshot count quota.
        #[arg(long)]
        max_snapshots: Option<u64>,
        /// Owner of the tenant's NBD socket DATA_DIR/sockets/NAME.sock (mode 0600), as
        /// UID[:GID]: the local user (or container) that may open the tenant's volumes.
        #[arg(long)]
        socket_owner: Option<String>,
    },
    /// Revokes every TLS client certificate issued for the tenant (`attach --tcp`) and
    /// closes the NBD sessions they opened; attach again for a new one.
    RevokeCertificates {
        /// Tenant name.
        name: String,
    },
    /// Lists tenants.
    List,
    /// Shows a tenant with its quota and usage.
    Show {
        /// Tenant name.
        name: String,
    },
    /// Deletes an empty tenant.
    Delete {
        /// Tenant name.
        name: String,
    },
    /// Changes a tenant's quota: only the limits named change, the others stay as they are;
    /// `unlimited` removes a limit (e.g. `--max-iops 500 --capacity unlimited`).
    SetQuota {
        /// Tenant name.
        name: String,
        /// Capacity quota, the sum of volume sizes (e.g. 1T), or `unlimited`.
        #[arg(long, value_name = "SIZE|unlimited")]
        capacity: Option<String>,
        /// Most volumes, or `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_volumes: Option<String>,
        /// Most snapshots, or `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_snapshots: Option<String>,
        /// Most IOPS, the sum of the volumes' IOPS limits (every volume then needs one), or
        /// `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_iops: Option<String>,
        /// Most GPUs of the tenant's jobs, pending and running, or `unlimited`.
        #[arg(long, alias = "max-gpus", value_name = "N|unlimited")]
        gpus: Option<String>,
        /// Most networks, or `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_networks: Option<String>,
        /// Most network ports, or `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_ports: Option<String>,
        /// Most snapshot schedules, or `unlimited`.
        #[arg(long, value_name = "N|unlimited")]
        max_schedules: Option<String>,
    },
    /// Sets a tenant's share of a saturated pool (admin): its weight against the other
    /// tenants (default 100) and the operations per second it gets first. Both are replaced.
    /// It binds only where the pool's capacity is set (`strata pool set-share`).
    SetShare {
        /// Tenant name.
        name: String,
        /// Relative weight, 1 to 10000 (default 100).
        #[arg(long, value_name = "N")]
        weight: Option<u32>,
        /// Operations per second reserved for the tenant.
        #[arg(long, value_name = "N")]
        reservation_iops: Option<u64>,
    },
    /// Shows a tenant's share and the requests it had admitted through it.
    ShowShare {
        /// Tenant name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Creates a token; prints its secret once.
    Create {
        /// Tenant it acts for (not for admin tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// admin, tenant-admin, member or reader.
        #[arg(long)]
        role: String,
        /// Lifetime: 30d, 12h, 90m, 2w, or `never` (admins only). Default 90d.
        #[arg(long)]
        expires: Option<String>,
        /// Print only the secret (for `export STRATA_TOKEN=$(strata token create ... -q)`).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Lists the tokens you may see (never their secrets): admins all, tenant admins their
    /// tenant's, members and readers their own.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a token by its id: it is refused from then on.
    Revoke {
        /// Token id (from `strata token list`).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Creates a thin volume.
    Create {
        /// Volume name.
        name: String,
        /// Size, e.g. 10G.
        #[arg(long)]
        size: String,
        /// Tenant to create in (admins; default: the `default` tenant the first start made).
        #[arg(long)]
        tenant: Option<String>,
        /// Pool.
        #[arg(long)]
        pool: Option<String>,
        /// Device class: hdd, ssd or nvme.
        #[arg(long)]
        class: Option<String>,
        /// Makes the create idempotent: a retry with the same id answers the volume it made;
        /// the same id with another name is refused (request_id_reused).
        #[arg(long)]
        request_id: Option<String>,
        /// IOPS limit.
        #[arg(long)]
        iops_limit: Option<u64>,
        /// Bandwidth limit per second, e.g. 200M.
        #[arg(long)]
        bandwidth_limit: Option<String>,
        /// Encrypt the volume at rest (the daemon needs a master key: `strata serve
        /// --master-key-file`); its snapshots and clones share its key.
        #[arg(long)]
        encrypted: bool,
        /// Copies, each on its own device of the pool (1 to 3; the pool's default when not
        /// given). Writes are acknowledged when every healthy copy has them; reads fail over.
        #[arg(long)]
        replicas: Option<u64>,
    },
    /// Adjusts a volume's performance limits (applies to open connections within a second).
    /// Only the limits named change, the others stay as they are; `none` removes a limit
    /// (e.g. `--bandwidth-limit 200M` keeps the IOPS limit, `--iops-limit none` drops it).
    SetQos {
        /// Volume name.
        name: String,
        /// IOPS limit, or `none`.
        #[arg(long, value_name = "N|none")]
        iops_limit: Option<String>,
        /// Bandwidth limit per second, e.g. 200M, or `none`.
        #[arg(long, value_name = "RATE|none")]
        bandwidth_limit: Option<String>,
        /// IOPS burst: the depth of the token bucket, i.e. how many operations may go at once
        /// after an idle spell before the rate applies (default, or `none`: a tenth of a
        /// second's worth of the limit, so a 5 s run stays within 2% of it; a deeper bucket
        /// lets a run of T seconds take limit*T + burst).
        #[arg(long, value_name = "N|none")]
        burst_iops: Option<String>,
        /// Bandwidth burst, e.g. 1G: the depth of the byte bucket, as for `--burst-iops`
        /// (default, or `none`: a tenth of a second's worth). A request larger than the depth
        /// still passes once the bucket is full, and leaves it in debt.
        #[arg(long, value_name = "SIZE|none")]
        burst_bandwidth: Option<String>,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Exports a volume over NBD and prints the URI a client opens.
    Attach {
        /// Volume name, or VOLUME@SNAPSHOT to export a snapshot read-only (by its name or id).
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// Over TCP with TLS: also fetch a client certificate into --credentials-dir.
        #[arg(long)]
        tcp: bool,
        /// Where --tcp writes ca-cert.pem, client-cert.pem and client-key.pem (the layout
        /// qemu's tls-creds-x509 and libnbd's tls-certificates read).
        #[arg(long, default_value = "./strata-nbd-tls")]
        credentials_dir: std::path::PathBuf,
    },
    /// Copies a local raw image into a volume over NBD, with a progress bar. All-zero
    /// 1 MiB stretches are skipped, so the volume stays thin.
    Import {
        /// Volume name.
        name: String,
        /// The raw image file.
        file: std::path::PathBuf,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Copies a volume, or a snapshot as VOLUME@SNAPSHOT, into a local raw image over NBD,
    /// with a progress bar; zeros are left as holes (a sparse file). A volume found detached
    /// is detached again afterwards.
    Export {
        /// Volume name, or VOLUME@SNAPSHOT (by the snapshot's name or id).
        name: String,
        /// The raw image file to write (replaced if it exists).
        file: std::path::PathBuf,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Lists the attached volumes (NBD exports) you may see, with their URIs.
    Attachments {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Stops exporting a volume to new NBD connections.
    Detach {
        /// Volume name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Serves a volume from the node this CLI talks to, after its serving node went down:
    /// this node must hold a copy with every acknowledged write. The old node is fenced: its
    /// writes to the copies are refused from now on.
    TakeOver {
        /// Volume name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Live IOPS and throughput of a volume over the last 1, 10 and 60 whole seconds, and
    /// its latency percentiles over the last minute as a client sees them (from arrival to
    /// reply, including the wait for QoS admission).
    Stats {
        /// Volume name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Lists volumes.
    List {
        /// Only this tenant's volumes (admins); a tenant that does not exist is not found.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a volume.
    Show {
        /// Volume name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// Follow a resync or rebuild of its copies with a progress bar until the volume is
        /// healthy (or 10 minutes without progress), then show it.
        #[arg(long)]
        watch: bool,
    },
    /// Grows or shrinks a volume.
    Resize {
        /// Volume name.
        name: String,
        /// New size, e.g. 20G.
        #[arg(long)]
        size: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Deletes a volume (with its snapshots only if --force).
    Delete {
        /// Volume name.
        name: String,
        /// Also delete the volume's snapshots.
        #[arg(long)]
        force: bool,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Creates a volume from a snapshot (`VOLUME@SNAPSHOT`).
    Clone {
        /// The snapshot, as VOLUME@SNAPSHOT.
        snapshot: String,
        /// Name of the new volume.
        new_name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Returns a volume to one of its snapshots.
    Rollback {
        /// Volume name.
        volume: String,
        /// Snapshot name (of that volume).
        snapshot: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Snapshots a volume.
    Create {
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Copies a snapshot (VOLUME@SNAPSHOT) into a local raw image over NBD, with a progress
    /// bar (the same as `volume export VOLUME@SNAPSHOT FILE`).
    Export {
        /// The snapshot, as VOLUME@SNAPSHOT (by its name or id).
        snapshot: String,
        /// The raw image file to write (replaced if it exists).
        file: std::path::PathBuf,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Lists a volume's snapshots.
    List {
        /// Volume name.
        volume: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Deletes a snapshot.
    Delete {
        /// Volume name.
        volume: String,
        /// Snapshot name.
        name: String,
        /// Tenant of the volume (admins, when the name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Snapshots several volumes at one crash-consistent instant (a checkpoint group: the
    /// shards of one job's checkpoint). Each member snapshot is named NAME, so VOL@NAME
    /// attaches it.
    CreateGroup {
        /// Group name.
        name: String,
        /// Volume names, each once, all of one tenant.
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Tenant of the volumes (admins, when a name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// Series the group belongs to, for retention.
        #[arg(long)]
        series: Option<String>,
        /// Keep only the newest N groups of the series (older ones are deleted after this one
        /// is taken). Needs --series.
        #[arg(long, requires = "series")]
        keep: Option<u64>,
    },
    /// Lists checkpoint groups.
    ListGroups {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a checkpoint group and its members.
    ShowGroup {
        /// Group name.
        name: String,
        /// Tenant of the group (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Deletes a checkpoint group and its snapshots.
    DeleteGroup {
        /// Group name.
        name: String,
        /// Tenant of the group (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Clones every member of a group into a new volume named PREFIX-VOLUME (all or none):
    /// a new job starting from a checkpoint.
    CloneGroup {
        /// Group name.
        name: String,
        /// Prefix of the new volumes' names.
        #[arg(long)]
        prefix: String,
        /// Tenant of the group (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Snapshot schedules: a snapshot of a volume (or a checkpoint group of several) every
    /// interval, keeping the newest N it took.
    Schedule {
        #[command(subcommand)]
        cmd: ScheduleCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum SwitchCmd {
    /// Creates a switch (with the learning flow `priority=0,actions=normal`).
    Create {
        /// Switch name.
        name: String,
    },
    /// Lists switches.
    List,
    /// Deletes a switch and closes its ports.
    Delete {
        /// Switch name.
        name: String,
    },
    /// Adds a TAP port (the device is created if missing), or with --veth a veth pair whose
    /// peer goes to a container (`ip link set PEER netns X`).
    AddPort {
        /// Switch name.
        switch: String,
        /// Port name, also the TAP device's name.
        port: String,
        /// Tenant network (VNI) the port belongs to.
        #[arg(long)]
        vni: Option<u32>,
        /// VLAN the port belongs to (access port).
        #[arg(long)]
        vlan: Option<u16>,
        /// Make it the host-side internal port.
        #[arg(long, conflicts_with = "veth")]
        internal: bool,
        /// Make a veth pair: PORT is the switch's end, the peer the container's.
        #[arg(long)]
        veth: bool,
        /// The veth peer's name (default: PORT + "p").
        #[arg(long, requires = "veth")]
        peer: Option<String>,
    },
    /// Adds a VXLAN tunnel port.
    AddVxlan {
        /// Switch name.
        switch: String,
        /// Port name.
        port: String,
        /// Remote VTEP address.
        #[arg(long)]
        remote: std::net::Ipv4Addr,
        /// Local VTEP address to send from and receive on (default: any).
        #[arg(long)]
        local: Option<std::net::Ipv4Addr>,
        /// The tunnel's fixed VNI (default: the VNI of each packet's port).
        #[arg(long)]
        vni: Option<u32>,
        /// UDP port of the tunnel (default 4789).
        #[arg(long)]
        dstport: Option<u16>,
    },
    /// Removes a port.
    DelPort {
        /// Switch name.
        switch: String,
        /// Port name.
        port: String,
    },
    /// Port counters.
    Ports {
        /// Switch name.
        switch: String,
    },
    /// Adds a flow, e.g. "table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:tap1".
    AddFlow {
        /// Switch name.
        switch: String,
        /// The flow, in ovs-ofctl syntax.
        flow: String,
    },
    /// Prints the flows with their counters.
    DumpFlows {
        /// Switch name.
        switch: String,
    },
    /// Deletes the flows matching MATCH (all without one).
    DelFlows {
        /// Switch name.
        switch: String,
        /// Flow match, e.g. "table=0,ip" (all flows without one).
        #[arg(name = "MATCH")]
        filter: Option<String>,
        /// Only the flow with exactly this match and priority.
        #[arg(long)]
        strict: bool,
    },
    /// Shows the flows a packet hits in each table and what it becomes.
    Trace {
        /// Switch name.
        switch: String,
        /// The packet, e.g. "in_port=tap1,dl_src=02:00:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff".
        packet: String,
    },
}

/// An API client.
pub struct Client {
    base: String,
    token: String,
    source: TokenSource,
    timeout: Duration,
    out: Output,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the daemon `target` (see `config::resolve`); each request is given up
    /// after `timeout`, connecting included.
    pub fn new(target: Target, timeout: Duration, out: Output) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            base: target.base,
            token: target.token,
            source: target.source,
            timeout,
            out,
            agent,
        }
    }

    fn req(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, b) => {
                let b = b.unwrap_or(Value::Null);
                let r = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                r.header("Authorization", &auth).send_json(&b)
            }
        };
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return Err(self.unreachable(e)),
        };
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or("http_error");
            let msg = v["error"]["message"].as_str().unwrap_or("request failed");
            if status == 401 {
                bail!(
                    "{code}: {msg} (HTTP 401; token from {}). {}",
                    self.source,
                    TOKEN_HINT
                );
            }
            bail!("{code}: {msg} (HTTP {status})");
        }
        Ok(v)
    }

    /// A transport error, with what to do about it.
    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let base = &self.base;
        let start = format!(
            "is `strata serve` running? Start it with `strata serve` (data in ./strata-data, \
             listening on {}), or name the daemon with --endpoint HOST:PORT or save it with \
             `strata login --endpoint URL --token TOKEN`",
            crate::config::DEFAULT_LISTEN
        );
        match e {
            ureq::Error::Timeout(_) => anyhow!(
                "timeout: no answer from the Strata API at {base} within {} s: the daemon is \
                 busy or what listens there is not Strata; retry with a longer --timeout, or \
                 check the address",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                anyhow!("unreachable: cannot connect to the Strata API at {base} (connection refused): {start}")
            }
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => anyhow!(
                "timeout: no answer from the Strata API at {base} within {} s: retry with a \
                 longer --timeout, or check the address",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::HostNotFound => {
                anyhow!("unreachable: the host of {base} is not found: check --endpoint")
            }
            other => {
                anyhow!("unreachable: cannot reach the Strata API at {base} ({other}): {start}")
            }
        }
    }

    /// `strata login`: checks the token against the endpoint, then saves both.
    pub fn login(&self, path: &Path) -> Result<()> {
        if self.token.is_empty() {
            bail!("invalid_argument: name the token with --token (or STRATA_TOKEN)");
        }
        // Any authenticated read proves the token: every role may list what it sees.
        self.req("GET", "/v1/tenants", None)?;
        crate::config::save(
            path,
            &crate::config::Config {
                endpoint: Some(self.base.clone()),
                token: Some(self.token.clone()),
            },
        )?;
        self.done(&format!(
            "logged in to {}; saved in {}",
            self.base,
            path.display()
        ))
    }

    /// A progress bar of `len` in `template` on a terminal table output; hidden for JSON and
    /// YAML (their output is the final document only).
    fn progress(&self, len: u64, template: &str) -> indicatif::ProgressBar {
        if !matches!(self.out, Output::Table) {
            return indicatif::ProgressBar::hidden();
        }
        indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(template)
                .expect("template")
                .progress_chars("=> "),
        )
    }

    fn print(&self, v: &Value, columns: &[(&str, &str)]) -> Result<()> {
        match self.out {
            Output::Json => outln!("{}", serde_json::to_string_pretty(v)?),
            Output::Yaml => out!("{}", serde_yaml::to_string(v)?),
            Output::Table => {
                let rows: Vec<&Value> = match v.get("items").and_then(Value::as_array) {
                    Some(items) => items.iter().collect(),
                    None => vec![v],
                };
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| columns.iter().map(|(_, k)| cell(r, k)).collect())
                    .collect();
                let widths: Vec<usize> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (h, _))| {
                        cells
                            .iter()
                            .map(|c| c[i].len())
                            .chain([h.len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let line = |vals: Vec<String>| {
                    vals.iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_string()
                };
                outln!(
                    "{}",
                    line(columns.iter().map(|(h, _)| h.to_string()).collect())
                );
                for c in cells {
                    outln!("{}", line(c));
                }
            }
        }
        Ok(())
    }

    fn volume_id(&self, name: &str, tenant: Option<&str>) -> Result<String> {
        let mut q = format!("/v1/volumes?name={}", enc(name));
        if let Some(t) = tenant {
            q.push_str(&format!("&tenant={}", enc(t)));
        }
        let v = self.req("GET", &q, None)?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        match items.len() {
            0 => bail!("volume_not_found: volume {name} not found"),
            1 => Ok(items[0]["id"].as_str().unwrap_or_default().to_string()),
            _ => bail!("volume name {name} exists in several tenants: name one with --tenant"),
        }
    }

    fn snapshot_id(&self, vol_id: &str, name: &str) -> Result<String> {
        let v = self.req("GET", &format!("/v1/volumes/{vol_id}/snapshots"), None)?;
        v["items"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name || s["id"] == name))
            .and_then(|s| s["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("snapshot_not_found: snapshot {name} not found"))
    }

    /// `strata pool set-share NAME [--iops-capacity N] [--bandwidth-capacity SIZE]`.
    pub fn pool_set_share(
        &self,
        name: &str,
        iops_capacity: Option<u64>,
        bandwidth_capacity: Option<&str>,
    ) -> Result<()> {
        let s = wire::PoolShare {
            iops_capacity,
            bandwidth_capacity: bandwidth_capacity
                .map(|b| bytes(b, "bandwidth-capacity"))
                .transpose()?,
        };
        let v = self.req("PUT", &format!("/v1/pools/{}/share", enc(name)), body(&s))?;
        self.print(&v, &POOL_SHARE_COLS)
    }

    /// `strata pool show-share NAME`.
    pub fn pool_show_share(&self, name: &str) -> Result<()> {
        let v = self.req("GET", &format!("/v1/pools/{}/share", enc(name)), None)?;
        self.print(&v, &POOL_SHARE_COLS)
    }

    /// `strata pool set NAME --overcommit R`.
    pub fn pool_set(&self, name: &str, overcommit: &str) -> Result<()> {
        let b = match overcommit.parse::<f64>() {
            Ok(r) => body(&wire::SetPoolSettings {
                overcommit: Some(r),
            })
            .expect("json"),
            Err(_) if overcommit.eq_ignore_ascii_case("unlimited") => {
                body(&wire::SetPoolSettings { overcommit: None }).expect("json")
            }
            Err(_) => bail!(
                "invalid_argument: --overcommit takes a ratio such as 4 or 1.5, or 0 or unlimited"
            ),
        };
        let v = self.req("PUT", &format!("/v1/pools/{name}/settings"), Some(b))?;
        self.print(
            &v,
            &[
                ("POOL", "pool"),
                ("OVERCOMMIT", "overcommit"),
                ("CAPACITY", "capacity_bytes:size"),
                ("PROVISIONED", "provisioned_bytes:size"),
                ("LIMIT", "limit_bytes:size"),
            ],
        )
    }

    /// `strata master-key rotate PATH`.
    pub fn master_key_rotate(&self, path: &std::path::Path) -> Result<()> {
        let path = std::path::absolute(path)?;
        let b = wire::RotateMasterKey {
            key_file: path.display().to_string(),
        };
        let v = self.req("POST", "/v1/master-key/rotate", body(&b))?;
        self.print(
            &json!({"items": v["devices"]}),
            &[
                ("DEVICE", "device"),
                ("ROTATED", "rotated"),
                ("ERROR", "error"),
            ],
        )?;
        let failed = v["devices"]
            .as_array()
            .map_or(0, |d| d.iter().filter(|x| x["rotated"] != true).count());
        if failed > 0 {
            bail!(
                "busy: {failed} device(s) kept the old master key: keep it, and retry the rotation"
            );
        }
        if matches!(self.out, Output::Table) {
            outln!(
                "master key {}: start the daemon with --master-key-file {} from now on",
                v["master_key"].as_str().unwrap_or_default(),
                path.display()
            );
        }
        Ok(())
    }

    /// `strata pool create NAME --device PATH[:CLASS]...`.
    pub fn pool_create(
        &self,
        name: &str,
        devices: &[String],
        replicas: u64,
        force: bool,
    ) -> Result<()> {
        let b = wire::CreatePool {
            name: name.to_string(),
            devices: devices
                .iter()
                .map(|d| new_device(d))
                .collect::<Result<_>>()?,
            replicas: Some(replicas),
            force,
        };
        self.req("POST", "/v1/pools", body(&b))?;
        self.pools(Some(name))
    }

    /// `strata pool add-device NAME PATH[:CLASS]`.
    pub fn pool_add_device(&self, name: &str, device: &str, force: bool) -> Result<()> {
        let d = new_device(device)?;
        let b = wire::AddDevice {
            path: d.path,
            class: d.class,
            force,
        };
        self.req(
            "POST",
            &format!("/v1/pools/{}/devices", enc(name)),
            body(&b),
        )?;
        self.pools(Some(name))
    }

    /// Follows volume `id`'s resync (from its detail `v`) until none is left; the last detail.
    fn watch_resync(&self, id: &str, mut v: Value) -> Result<Value> {
        let bar = self.progress(0, BYTES_BAR);
        let (mut last, mut since) = (u64::MAX, std::time::Instant::now());
        loop {
            let r = v["resync"].as_array().cloned().unwrap_or_default();
            if r.is_empty() && v["health"] != "degraded" {
                break;
            }
            let done: u64 = r.iter().filter_map(|c| c["done_bytes"].as_u64()).sum();
            let total: u64 = r.iter().filter_map(|c| c["total_bytes"].as_u64()).sum();
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(match r.first() {
                Some(c) if c["rebuild"] == true => format!("rebuilding onto {}", c["device"]),
                Some(c) => format!("resyncing {}", c["device"]),
                None => "degraded, waiting for a device".to_string(),
            });
            if done != last {
                (last, since) = (done, std::time::Instant::now());
            } else if since.elapsed() > std::time::Duration::from_secs(600) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            v = self.req("GET", &format!("/v1/volumes/{id}"), None)?;
        }
        bar.finish_and_clear();
        Ok(v)
    }

    /// `strata pool scrub NAME [--rate SIZE] [--no-wait]`: starts a scrub (or finds the one
    /// running) and, when `wait`, follows it with a progress bar until it is done.
    pub fn pool_scrub(&self, name: &str, rate: &str, wait: bool) -> Result<()> {
        let b = wire::StartScrub {
            rate: Some(bytes(rate, "rate")?),
        };
        let path = format!("/v1/pools/{}/scrub", enc(name));
        let mut v = self.req("POST", &path, body(&b))?;
        if wait {
            let bar = self.progress(v["total_bytes"].as_u64().unwrap_or(0), BYTES_BAR);
            bar.set_message(format!("scrubbing {name}"));
            while v["state"] == "running" {
                bar.set_position(v["done_bytes"].as_u64().unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(200));
                v = self.req("GET", &path, None)?;
            }
            bar.finish_and_clear();
        }
        self.print_scrub(&v)
    }

    /// `strata pool scrub-status NAME`.
    pub fn pool_scrub_status(&self, name: &str) -> Result<()> {
        let v = self.req("GET", &format!("/v1/pools/{}/scrub", enc(name)), None)?;
        self.print_scrub(&v)
    }

    fn print_scrub(&self, v: &Value) -> Result<()> {
        self.print(
            v,
            &[
                ("POOL", "pool"),
                ("STATE", "state"),
                ("READ", "done_bytes:size"),
                ("OF", "total_bytes:size"),
                ("BAD_BLOCKS", "bad_blocks"),
                ("REPAIRED", "repaired"),
            ],
        )?;
        if let (Output::Table, Some(bad)) = (&self.out, v["unrepaired"].as_array()) {
            if !bad.is_empty() {
                outln!("");
                self.print(
                    &json!({"items": bad}),
                    &[
                        ("VOLUME", "volume"),
                        ("SNAPSHOT", "snapshot"),
                        ("DEVICE", "device"),
                        ("OFFSET", "offset"),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// `strata pool online-device NAME DEVICE`.
    pub fn pool_online_device(&self, name: &str, device: &str) -> Result<()> {
        self.req(
            "POST",
            &format!("/v1/pools/{}/devices/{}/online", enc(name), enc(device)),
            None,
        )?;
        self.pools(Some(name))
    }

    /// `strata pool remove-device NAME DEVICE`.
    pub fn pool_remove_device(&self, name: &str, device: &str, wait: bool) -> Result<()> {
        let mut v = self.req(
            "DELETE",
            &format!("/v1/pools/{}/devices/{}", enc(name), enc(device)),
            None,
        )?;
        let left = |v: &Value| -> Option<u64> {
            v["devices"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == device)
                .map(|d| d["copies"].as_u64().unwrap_or(0))
        };
        if wait {
            let total = left(&v).unwrap_or(0);
            let bar = self.progress(total, "{msg} [{bar:40}] {pos}/{len} copies moved");
            bar.set_message(format!("draining {device}"));
            let (mut last, mut since) = (total, std::time::Instant::now());
            while let Some(n) = left(&v) {
                bar.set_position(total.saturating_sub(n));
                if n != last {
                    (last, since) = (n, std::time::Instant::now());
                } else if since.elapsed() > std::time::Duration::from_secs(60) {
                    bar.finish_and_clear();
                    bail!(
                        "busy: the drain of {device} made no progress for a minute ({n} copies \
                         left; a volume with snapshots cannot move: see `strata audit`); it \
                         goes on in the daemon"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
                v = self.req("GET", &format!("/v1/pools/{}", enc(name)), None)?;
            }
            bar.finish_and_clear();
        }
        self.pools(Some(name))
    }

    /// `strata pool list|show`.
    pub fn pools(&self, name: Option<&str>) -> Result<()> {
        let v = match name {
            Some(n) => self.req("GET", &format!("/v1/pools/{}", enc(n)), None)?,
            None => self.req("GET", "/v1/pools", None)?,
        };
        self.print(
            &v,
            &[
                ("NAME", "name"),
                ("REPLICAS", "replicas"),
                ("CAPACITY", "capacity:size"),
                ("ALLOCATED", "allocated:size"),
                ("FREE", "free:size"),
                ("PROVISIONED", "provisioned:size"),
            ],
        )?;
        // `show` also lists the pool's devices (JSON and YAML carry them in `devices`).
        if let (Some(_), Output::Table) = (name, &self.out) {
            outln!("");
            self.print(
                &json!({"items": v["devices"]}),
                &[
                    ("DEVICE", "id"),
                    ("CLASS", "class"),
                    ("STATE", "state"),
                    ("HEALTH", "health"),
                    ("CAPACITY", "capacity:size"),
                    ("ALLOCATED", "allocated:size"),
                    ("COPIES", "copies"),
                    ("READ_ERR", "read_errors"),
                    ("WRITE_ERR", "write_errors"),
                    ("CSUM_ERR", "checksum_errors"),
                    ("REPAIRED", "repaired"),
                    ("PATH", "path"),
                ],
            )?;
        }
        Ok(())
    }

    /// `strata tenant ...`.
    pub fn tenant(&self, cmd: TenantCmd) -> Result<()> {
        let cols = [
            ("NAME", "name"),
            ("VOLUMES", "usage.volumes"),
            ("SNAPSHOTS", "usage.snapshots"),
            ("USED", "usage.capacity_bytes:size"),
            ("QUOTA", "quota.capacity_bytes:size"),
        ];
        match cmd {
            TenantCmd::Create {
                name,
                capacity,
                max_volumes,
                max_snapshots,
                socket_owner,
            } => {
                let quota = wire::Quota {
                    capacity_bytes: capacity.map(|c| bytes(&c, "capacity")).transpose()?,
                    volumes: max_volumes,
                    snapshots: max_snapshots,
                    iops: None,
                    gpus: None,
                    networks: None,
                    ports: None,
                    snapshot_schedules: None,
                };
                let v = self.req(
                    "POST",
                    "/v1/tenants",
                    body(&wire::CreateTenant {
                        name,
                        quota,
                        socket_owner,
                    }),
                )?;
                self.print(&v, &cols)
            }
            TenantCmd::RevokeCertificates { name } => {
                let path = format!("/v1/tenants/{}/certificates/revoke", enc(&name));
                let v = self.req("POST", &path, None)?;
                match self.out {
                    Output::Table => self.done(&format!(
                        "{} certificate(s) of tenant {name} revoked, {} session(s) closed",
                        v["revoked"], v["sessions_closed"]
                    )),
                    _ => self.print(&v, &[]),
                }
            }
            TenantCmd::List => self.print(&self.req("GET", "/v1/tenants", None)?, &cols),
            TenantCmd::Show { name } => self.print(
                &self.req("GET", &format!("/v1/tenants/{}", enc(&name)), None)?,
                &cols,
            ),
            TenantCmd::Delete { name } => {
                self.req("DELETE", &format!("/v1/tenants/{}", enc(&name)), None)?;
                self.done(&format!("tenant {name} deleted"))
            }
            TenantCmd::SetShare {
                name,
                weight,
                reservation_iops,
            } => {
                let s = wire::SetTenantShare {
                    weight,
                    reservation_iops,
                };
                let v = self.req(
                    "PUT",
                    &format!("/v1/tenants/{}/share", enc(&name)),
                    body(&s),
                )?;
                self.print(&v, &SHARE_COLS)
            }
            TenantCmd::ShowShare { name } => self.print(
                &self.req("GET", &format!("/v1/tenants/{}/share", enc(&name)), None)?,
                &SHARE_COLS,
            ),
            TenantCmd::SetQuota {
                name,
                capacity,
                max_volumes,
                max_snapshots,
                max_iops,
                gpus,
                max_networks,
                max_ports,
                max_schedules,
            } => {
                let q = wire::QuotaPatch {
                    capacity_bytes: limit(capacity, "capacity", |c| bytes(c, "capacity"))?,
                    volumes: limit(max_volumes, "max-volumes", |n| count(n, "max-volumes"))?,
                    snapshots: limit(max_snapshots, "max-snapshots", |n| {
                        count(n, "max-snapshots")
                    })?,
                    iops: limit(max_iops, "max-iops", |n| count(n, "max-iops"))?,
                    gpus: limit(gpus, "gpus", |n| count(n, "gpus"))?,
                    networks: limit(max_networks, "max-networks", |n| count(n, "max-networks"))?,
                    ports: limit(max_ports, "max-ports", |n| count(n, "max-ports"))?,
                    snapshot_schedules: limit(max_schedules, "max-schedules", |n| {
                        count(n, "max-schedules")
                    })?,
                };
                if q == wire::QuotaPatch::default() {
                    bail!("invalid_argument: name at least one limit to change (see --help)");
                }
                let v = self.req(
                    "PATCH",
                    &format!("/v1/tenants/{}/quota", enc(&name)),
                    body(&q),
                )?;
                self.print(&v, &cols)
            }
        }
    }

    /// `strata token create|list|revoke`.
    pub fn token(&self, cmd: TokenCmd) -> Result<()> {
        let cols = [
            ("ID", "id"),
            ("TENANT", "tenant"),
            ("ROLE", "role"),
            ("CREATED", "created:time"),
            ("EXPIRES", "expires:time"),
            ("LAST USED", "last_used:time"),
        ];
        match cmd {
            TokenCmd::Create {
                tenant,
                role,
                expires,
                quiet,
            } => {
                let role: wire::Role = serde_json::from_value(Value::String(role.clone()))
                    .map_err(|_| {
                        anyhow!(
                            "invalid_argument: unknown role {role:?} (admin, tenant-admin, member, reader)"
                        )
                    })?;
                let v = self.req(
                    "POST",
                    "/v1/tokens",
                    body(&wire::CreateToken {
                        tenant,
                        role,
                        expires,
                    }),
                )?;
                if quiet {
                    outln!("{}", v["token"].as_str().unwrap_or_default());
                    return Ok(());
                }
                self.print(
                    &v,
                    &[
                        ("ID", "id"),
                        ("TENANT", "tenant"),
                        ("ROLE", "role"),
                        ("EXPIRES", "expires:time"),
                        ("TOKEN", "token"),
                    ],
                )
            }
            TokenCmd::List { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                self.print(&self.req("GET", &format!("/v1/tokens{q}"), None)?, &cols)
            }
            TokenCmd::Revoke { id } => {
                self.req("DELETE", &format!("/v1/tokens/{}", enc(&id)), None)?;
                self.done(&format!("token {id} revoked"))
            }
        }
    }

    /// `strata volume ...`.
    pub fn volume(&self, cmd: VolumeCmd) -> Result<()> {
        let cols = [
            ("NAME", "name"),
            ("TENANT", "tenant"),
            ("SIZE", "size:size"),
            ("STATE", "state"),
            ("ID", "id"),
        ];
        match cmd {
            VolumeCmd::Create {
                name,
                size,
                tenant,
                pool,
                class,
                request_id,
                iops_limit,
                bandwidth_limit,
                encrypted,
                replicas,
            } => {
                let b = wire::CreateVolume {
                    encrypted,
                    replicas,
                    name,
                    size: bytes(&size, "size")?.into(),
                    tenant,
                    pool,
                    class,
                    request_id,
                    iops_limit,
                    bandwidth_limit: bandwidth_limit
                        .map(|b| bytes(&b, "bandwidth_limit").map(Into::into))
                        .transpose()?,
                };
                self.print(&self.req("POST", "/v1/volumes", body(&b))?, &cols)
            }
            VolumeCmd::List { tenant } => {
                let mut out: Vec<Value> = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let mut q = String::from("/v1/volumes?limit=1000");
                    if let Some(t) = &tenant {
                        q.push_str(&format!("&tenant={}", enc(t)));
                    }
                    if let Some(p) = &token {
                        q.push_str(&format!("&page_token={}", enc(p)));
                    }
                    let v = self.req("GET", &q, None)?;
                    out.extend(v["items"].as_array().cloned().unwrap_or_default());
                    match v["next_page_token"].as_str() {
                        Some(t) => token = Some(t.to_string()),
                        None => break,
                    }
                }
                self.print(&json!({ "items": out }), &cols)
            }
            VolumeCmd::Show {
                name,
                tenant,
                watch,
            } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                let mut v = self.req("GET", &format!("/v1/volumes/{id}"), None)?;
                if watch {
                    v = self.watch_resync(&id, v)?;
                }
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("SIZE", "size:size"),
                        ("ALLOCATED", "allocated:size"),
                        ("SNAPSHOTS", "snapshots"),
                        ("STATE", "state"),
                        ("COPIES", "replicas"),
                        ("HEALTH", "health"),
                        ("ENCRYPTED", "encrypted"),
                        ("ID", "id"),
                    ],
                )
            }
            VolumeCmd::SetQos {
                name,
                iops_limit,
                bandwidth_limit,
                burst_iops,
                burst_bandwidth,
                tenant,
            } => {
                let rate = |v: Option<String>, f: &'static str| {
                    limit(v, f, |b| bytes(b, f).map(wire::Bandwidth::from))
                };
                let q = wire::QosPatch {
                    iops_limit: limit(iops_limit, "iops-limit", |n| count(n, "iops-limit"))?,
                    bandwidth_limit: rate(bandwidth_limit, "bandwidth-limit")?,
                    burst_iops: limit(burst_iops, "burst-iops", |n| count(n, "burst-iops"))?,
                    burst_bandwidth: rate(burst_bandwidth, "burst-bandwidth")?,
                };
                if q == wire::QosPatch::default() {
                    bail!("invalid_argument: name at least one limit to change (see --help)");
                }
                let id = self.volume_id(&name, tenant.as_deref())?;
                let v = self.req("PATCH", &format!("/v1/volumes/{id}/qos"), body(&q))?;
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("IOPS LIMIT", "qos.iops_limit"),
                        ("BANDWIDTH LIMIT", "qos.bandwidth_limit:size"),
                    ],
                )
            }
            VolumeCmd::Attach {
                name,
                tenant,
                tcp,
                credentials_dir,
            } => {
                // `VOL@SNAP` exports a snapshot read-only: the volume's attachment serves it
                // under the export name `ID@SNAP` (the daemon resolves snapshot names).
                let (name, snap) = match name.split_once('@') {
                    Some((v, s)) => (v.to_string(), Some(s.to_string())),
                    None => (name, None),
                };
                let id = self.volume_id(&name, tenant.as_deref())?;
                if let Some(s) = &snap {
                    self.snapshot_id(&id, s)?;
                }
                let transport = if tcp {
                    wire::Transport::Tcp
                } else {
                    wire::Transport::Unix
                };
                let b = body(&wire::Attach {
                    transport: Some(transport),
                });
                let mut v = self.req("POST", &format!("/v1/volumes/{id}/attachments"), b)?;
                if tcp {
                    let a: wire::Attachment = serde_json::from_value(v.clone())?;
                    let c = a
                        .credentials
                        .ok_or_else(|| anyhow!("the server returned no credentials"))?;
                    write_credentials(&credentials_dir, &c)?;
                    // The private key stays in the files, not on the terminal.
                    let serial = v["credentials"]["serial"].clone();
                    let not_after = v["credentials"]["not_after"].clone();
                    v.as_object_mut().map(|o| o.remove("credentials"));
                    v["certificate_serial"] = serial;
                    v["certificate_not_after"] = not_after;
                    v["credentials_dir"] = json!(credentials_dir.display().to_string());
                }
                if let Some(s) = &snap {
                    let export = v["export"].as_str().unwrap_or_default().to_string();
                    let with = format!("{export}@{s}");
                    for k in ["uri", "tcp_uri"] {
                        if let Some(u) = v[k].as_str() {
                            v[k] = json!(u.replacen(&format!("/{export}"), &format!("/{with}"), 1));
                        }
                    }
                    v["export"] = json!(with);
                    v["snapshot"] = json!(s);
                    v["read_only"] = json!(true);
                }
                match self.out {
                    Output::Table if tcp => {
                        outln!("{}", v["tcp_uri"].as_str().unwrap_or_default());
                        eprintln!(
                            "client certificate written to {} (e.g. nbdinfo '{}?tls-certificates={}')",
                            credentials_dir.display(),
                            v["tcp_uri"].as_str().unwrap_or_default(),
                            credentials_dir.display()
                        );
                        Ok(())
                    }
                    Output::Table => {
                        outln!("{}", v["uri"].as_str().unwrap_or_default());
                        Ok(())
                    }
                    _ => self.print(&v, &[]),
                }
            }
            VolumeCmd::Import {
                name,
                file,
                tenant,
                quiet,
            } => self.import(&name, &file, tenant.as_deref(), quiet),
            VolumeCmd::Export {
                name,
                file,
                tenant,
                quiet,
            } => self.export(&name, &file, tenant.as_deref(), quiet),
            VolumeCmd::Attachments { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                let mut v = self.req("GET", &format!("/v1/attachments{q}"), None)?;
                // Names beside ids, from the volumes the caller sees.
                let vols = self.req("GET", "/v1/volumes?limit=1000", None)?;
                let names: std::collections::HashMap<String, Value> = vols["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| Some((x["id"].as_str()?.to_string(), x["name"].clone())))
                    .collect();
                for a in v["items"].as_array_mut().into_iter().flatten() {
                    let name = a["volume"]
                        .as_str()
                        .and_then(|id| names.get(id))
                        .cloned()
                        .unwrap_or(Value::Null);
                    a["name"] = name;
                }
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("TENANT", "tenant"),
                        ("SINCE (UTC)", "created:time"),
                        ("URI", "uri"),
                        ("VOLUME", "volume"),
                    ],
                )
            }
            VolumeCmd::Detach { name, tenant } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                self.req("DELETE", &format!("/v1/volumes/{id}/attachments"), None)?;
                self.done(&format!("volume {name} detached"))
            }
            VolumeCmd::TakeOver { name, tenant } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                let v = self.req("POST", &format!("/v1/volumes/{id}/takeover"), None)?;
                self.print(
                    &v,
                    &[("NAME", "name"), ("NODE", "node"), ("COPIES", "copies")],
                )
            }
            VolumeCmd::Stats { name, tenant } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                let v = self.req("GET", &format!("/v1/volumes/{id}/stats"), None)?;
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("IOPS 1S", "iops_1s:f1"),
                        ("IOPS 10S", "iops_10s:f1"),
                        ("IOPS 60S", "iops_60s:f1"),
                        ("THRU 1S", "throughput_1s:rate"),
                        ("THRU 10S", "throughput_10s:rate"),
                        ("THRU 60S", "throughput_60s:rate"),
                        ("P50", "latency_p50_us:us"),
                        ("P99", "latency_p99_us:us"),
                        ("IOPS LIMIT", "qos.iops_limit"),
                    ],
                )
            }
            VolumeCmd::Resize { name, size, tenant } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                let v = self.req(
                    "PATCH",
                    &format!("/v1/volumes/{id}"),
                    body(&wire::Resize {
                        size: bytes(&size, "size")?.into(),
                    }),
                )?;
                self.print(&v, &cols)
            }
            VolumeCmd::Delete {
                name,
                force,
                tenant,
            } => {
                let id = self.volume_id(&name, tenant.as_deref())?;
                self.req("DELETE", &format!("/v1/volumes/{id}?force={force}"), None)?;
                self.done(&format!("volume {name} deleted"))
            }
            VolumeCmd::Clone {
                snapshot,
                new_name,
                tenant,
            } => {
                let (vol, snap) = snapshot.split_once('@').ok_or_else(|| {
                    anyhow!("invalid_argument: name the snapshot as VOLUME@SNAPSHOT")
                })?;
                let vid = self.volume_id(vol, tenant.as_deref())?;
                let sid = self.snapshot_id(&vid, snap)?;
                let v = self.req(
                    "POST",
                    &format!("/v1/snapshots/{sid}/clone"),
                    body(&wire::NewName {
                        name: new_name,
                        request_id: None,
                    }),
                )?;
                self.print(&v, &cols)
            }
            VolumeCmd::Rollback {
                volume,
                snapshot,
                tenant,
            } => {
                let vid = self.volume_id(&volume, tenant.as_deref())?;
                let sid = self.snapshot_id(&vid, &snapshot)?;
                let v = self.req(
                    "POST",
                    &format!("/v1/volumes/{vid}/rollback"),
                    body(&wire::Rollback { snapshot: sid }),
                )?;
                self.print(&v, &cols)
            }
        }
    }

    /// `strata snapshot ...`.
    pub fn snapshot(&self, cmd: SnapshotCmd) -> Result<()> {
        let cols = [("NAME", "name"), ("SIZE", "size:size"), ("ID", "id")];
        match cmd {
            SnapshotCmd::Create {
                volume,
                name,
                tenant,
            } => {
                let vid = self.volume_id(&volume, tenant.as_deref())?;
                let v = self.req(
                    "POST",
                    &format!("/v1/volumes/{vid}/snapshots"),
                    body(&wire::NewName {
                        name,
                        request_id: None,
                    }),
                )?;
                self.print(&v, &cols)
            }
            SnapshotCmd::Export {
                snapshot,
                file,
                tenant,
                quiet,
            } => {
                if !snapshot.contains('@') {
                    bail!("invalid_argument: name the snapshot as VOLUME@SNAPSHOT");
                }
                self.export(&snapshot, &file, tenant.as_deref(), quiet)
            }
            SnapshotCmd::List { volume, tenant } => {
                let vid = self.volume_id(&volume, tenant.as_deref())?;
                let mut v = self.req("GET", &format!("/v1/volumes/{vid}/snapshots"), None)?;
                if self.out != Output::Table {
                    return self.print(&v, &cols);
                }
                // The schedule that took each (by name), `-` for one made by hand.
                let items = v["items"].as_array_mut();
                let items = items.into_iter().flatten().collect::<Vec<_>>();
                let names = match items.iter().find(|s| s["schedule"].is_string()) {
                    Some(s) => self.schedule_names(s["tenant"].as_str().unwrap_or_default()),
                    None => Default::default(),
                };
                for s in items {
                    if let Some(id) = s["schedule"].as_str() {
                        let shown = names.get(id).cloned().unwrap_or_else(|| id.to_string());
                        s["schedule"] = json!(shown);
                    }
                }
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("SIZE", "size:size"),
                        ("SCHEDULE", "schedule"),
                        ("ID", "id"),
                    ],
                )
            }
            SnapshotCmd::Delete {
                volume,
                name,
                tenant,
            } => {
                let vid = self.volume_id(&volume, tenant.as_deref())?;
                let sid = self.snapshot_id(&vid, &name)?;
                self.req("DELETE", &format!("/v1/snapshots/{sid}"), None)?;
                self.done(&format!("snapshot {volume}@{name} deleted"))
            }
            SnapshotCmd::CreateGroup {
                name,
                volumes,
                tenant,
                series,
                keep,
            } => {
                let ids = volumes
                    .iter()
                    .map(|v| self.volume_id(v, tenant.as_deref()))
                    .collect::<Result<Vec<_>>>()?;
                let v = self.req(
                    "POST",
                    "/v1/snapshot-groups",
                    body(&wire::CreateSnapshotGroup {
                        name,
                        volumes: ids,
                        series: series.map(|name| wire::Series { name, keep }),
                    }),
                )?;
                self.print_group(v)
            }
            SnapshotCmd::ListGroups { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                let mut v = self.req("GET", &format!("/v1/snapshot-groups{q}"), None)?;
                if let Some(items) = v["items"].as_array_mut() {
                    for g in items {
                        g["volumes"] = json!(g["members"].as_array().map_or(0, Vec::len));
                    }
                }
                self.print(
                    &v,
                    &[
                        ("NAME", "name"),
                        ("TENANT", "tenant"),
                        ("SERIES", "series"),
                        ("VOLUMES", "volumes"),
                        ("CREATED", "created"),
                        ("ID", "id"),
                    ],
                )
            }
            SnapshotCmd::ShowGroup { name, tenant } => {
                let id = self.group_id(&name, tenant.as_deref())?;
                let v = self.req("GET", &format!("/v1/snapshot-groups/{id}"), None)?;
                self.print_group(v)
            }
            SnapshotCmd::DeleteGroup { name, tenant } => {
                let id = self.group_id(&name, tenant.as_deref())?;
                self.req("DELETE", &format!("/v1/snapshot-groups/{id}"), None)?;
                self.done(&format!("checkpoint group {name} deleted"))
            }
            SnapshotCmd::CloneGroup {
                name,
                prefix,
                tenant,
            } => {
                let id = self.group_id(&name, tenant.as_deref())?;
                let v = self.req(
                    "POST",
                    &format!("/v1/snapshot-groups/{id}/clone"),
                    body(&wire::CloneGroup { prefix }),
                )?;
                self.print(&v, &[("NAME", "name"), ("SIZE", "size:size"), ("ID", "id")])
            }
            SnapshotCmd::Schedule { cmd } => self.schedule(cmd),
        }
    }

    /// A group's id from its name (in `tenant`, or the caller's).
    fn group_id(&self, name: &str, tenant: Option<&str>) -> Result<String> {
        let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(t)));
        let v = self.req("GET", &format!("/v1/snapshot-groups{q}"), None)?;
        let found: Vec<&Value> = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|g| g["name"] == name || g["id"] == name)
                    .collect()
            })
            .unwrap_or_default();
        match found.len() {
            0 => bail!("snapshot_group_not_found: checkpoint group {name} not found"),
            1 => Ok(found[0]["id"].as_str().unwrap_or_default().to_string()),
            _ => bail!("checkpoint group {name} exists in several tenants: name one with --tenant"),
        }
    }

    /// A group with its members' volume names.
    fn print_group(&self, mut v: Value) -> Result<()> {
        if let Output::Table = self.out {
            let members: Vec<Value> = v["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|m| {
                    let name = self
                        .req(
                            "GET",
                            &format!("/v1/volumes/{}", m["volume"].as_str().unwrap_or_default()),
                            None,
                        )
                        .map(|vol| vol["name"].clone())
                        .unwrap_or(Value::Null);
                    json!({"volume": name, "volume_id": m["volume"], "snapshot": m["snapshot"]})
                })
                .collect();
            outln!(
                "checkpoint group {} ({} volumes, tenant {})",
                v["name"].as_str().unwrap_or_default(),
                members.len(),
                v["tenant"].as_str().unwrap_or_default()
            );
            v = json!({ "items": members });
            return self.print(
                &v,
                &[
                    ("VOLUME", "volume"),
                    ("SNAPSHOT", "snapshot"),
                    ("VOLUME ID", "volume_id"),
                ],
            );
        }
        self.print(&v, &[])
    }

    /// `strata switch ...`.
    pub fn switch(&self, cmd: SwitchCmd) -> Result<()> {
        let sw = |n: &str| format!("/v1/switches/{}", enc(n));
        match cmd {
            SwitchCmd::Create { name } => {
                self.req(
                    "POST",
                    "/v1/switches",
                    body(&wire::CreateSwitch { name: name.clone() }),
                )?;
                self.done(&format!("switch {name} created"))
            }
            SwitchCmd::List => {
                let v = self.req("GET", "/v1/switches", None)?;
                let items: Vec<Value> = v["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| json!({"name": s["name"], "ports": s["ports"].as_array().map_or(0, Vec::len), "flows": s["flows"].as_array().map_or(0, Vec::len)}))
                    .collect();
                self.print(
                    &json!({"items": items}),
                    &[("NAME", "name"), ("PORTS", "ports"), ("FLOWS", "flows")],
                )
            }
            SwitchCmd::Delete { name } => {
                self.req("DELETE", &sw(&name), None)?;
                self.done(&format!("switch {name} deleted"))
            }
            SwitchCmd::AddPort {
                switch,
                port,
                vni,
                vlan,
                internal,
                veth,
                peer,
            } => {
                let kind = if internal {
                    wire::PortKind::Internal
                } else if veth {
                    wire::PortKind::Veth
                } else {
                    wire::PortKind::Tap
                };
                let b = body(&wire::SwitchPort {
                    name: port.clone(),
                    kind: Some(kind),
                    peer,
                    vni,
                    vlan,
                    ..Default::default()
                });
                let v = self.req("POST", &format!("{}/ports", sw(&switch)), b)?;
                if veth {
                    let peer = v["ports"]
                        .as_array()
                        .and_then(|ps| ps.iter().find(|p| p["name"] == port.as_str()))
                        .and_then(|p| p["peer"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    return self.done(&format!(
                        "veth port {port} added to {switch} (peer {peer}: ip link set {peer} netns NS)"
                    ));
                }
                self.done(&format!("port {port} added to {switch}"))
            }
            SwitchCmd::AddVxlan {
                switch,
                port,
                remote,
                local,
                vni,
                dstport,
            } => {
                let b = body(&wire::SwitchPort {
                    name: port.clone(),
                    kind: Some(wire::PortKind::Vxlan),
                    peer: None,
                    vni,
                    vlan: None,
                    remote: Some(remote),
                    local,
                    dstport,
                });
                self.req("POST", &format!("{}/ports", sw(&switch)), b)?;
                self.done(&format!("VXLAN port {port} added to {switch}"))
            }
            SwitchCmd::DelPort { switch, port } => {
                self.req(
                    "DELETE",
                    &format!("{}/ports/{}", sw(&switch), enc(&port)),
                    None,
                )?;
                self.done(&format!("port {port} removed from {switch}"))
            }
            SwitchCmd::Ports { switch } => {
                let v = self.req("GET", &format!("{}/ports", sw(&switch)), None)?;
                self.print(
                    &v,
                    &[
                        ("PORT", "name"),
                        ("NO", "number"),
                        ("KIND", "kind"),
                        ("PEER", "peer"),
                        ("RX PKTS", "rx_packets"),
                        ("RX DROP", "rx_dropped"),
                        ("RX ERR", "rx_errors"),
                        ("TX PKTS", "tx_packets"),
                        ("TX DROP", "tx_dropped"),
                        ("RX BYTES", "rx_bytes"),
                        ("TX BYTES", "tx_bytes"),
                    ],
                )
            }
            SwitchCmd::AddFlow { switch, flow } => {
                self.req(
                    "POST",
                    &format!("{}/flows", sw(&switch)),
                    body(&wire::AddFlow { flow }),
                )?;
                self.done("flow added")
            }
            SwitchCmd::DumpFlows { switch } => {
                let v = self.req("GET", &format!("{}/flows", sw(&switch)), None)?;
                match self.out {
                    Output::Table => {
                        for l in v["flows"].as_array().into_iter().flatten() {
                            outln!("{}", l.as_str().unwrap_or_default());
                        }
                        Ok(())
                    }
                    _ => self.print(&v, &[]),
                }
            }
            SwitchCmd::DelFlows {
                switch,
                filter,
                strict,
            } => {
                let b = body(&wire::DeleteFlows {
                    filter: filter.unwrap_or_default(),
                    strict,
                });
                let v = self.req("POST", &format!("{}/flows/delete", sw(&switch)), b)?;
                self.done(&format!("{} flow(s) deleted", v["deleted"]))
            }
            SwitchCmd::Trace { switch, packet } => {
                let v = self.req(
                    "POST",
                    &format!("{}/trace", sw(&switch)),
                    body(&wire::TraceRequest { packet }),
                )?;
                match self.out {
                    Output::Table => {
                        out!("{}", v["trace"].as_str().unwrap_or_default());
                        Ok(())
                    }
                    _ => self.print(&v, &[]),
                }
            }
        }
    }

    fn import(&self, name: &str, file: &Path, tenant: Option<&str>, quiet: bool) -> Result<()> {
        use std::io::Read;
        let id = self.volume_id(name, tenant)?;
        // The import attaches only for its own copy: a volume it found detached it leaves
        // detached, whatever happens (`Detach` on drop).
        let was_attached = match self.req("GET", &format!("/v1/volumes/{id}/attachments"), None) {
            Ok(_) => true,
            Err(e) if e.to_string().starts_with("attachment_not_found") => false,
            Err(e) => return Err(e),
        };
        let _detach = (!was_attached).then(|| Detach { c: self, id: &id });
        let a = self.req(
            "POST",
            &format!("/v1/volumes/{id}/attachments"),
            body(&wire::Attach {
                transport: Some(wire::Transport::Unix),
            }),
        )?;
        let uri = a["uri"].as_str().unwrap_or_default();
        let (export, socket) = uri
            .strip_prefix("nbd+unix:///")
            .and_then(|r| r.split_once("?socket="))
            .ok_or_else(|| anyhow!("unexpected attachment URI {uri}"))?;
        let mut f =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata()?.len();
        let mut nbd = crate::nbdclient::Client::connect(socket, export)?;
        if len > nbd.size {
            bail!(
                "invalid_argument: {} is {} but volume {name} is {}; resize it first",
                file.display(),
                format_size(len),
                format_size(nbd.size)
            );
        }
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            self.progress(len, BYTES_BAR)
        };
        bar.set_message(format!("importing into {name}"));
        const CHUNK: usize = 1 << 20;
        const BATCH: usize = 16;
        let mut buf = vec![0u8; CHUNK * BATCH];
        let (mut off, mut written) = (0u64, 0u64);
        while off < len {
            let want = ((len - off) as usize).min(buf.len());
            f.read_exact(&mut buf[..want])?;
            let chunks: Vec<(u64, &[u8])> = buf[..want]
                .chunks(CHUNK)
                .enumerate()
                .map(|(i, c)| (off + (i * CHUNK) as u64, c))
                .filter(|(_, c)| c.iter().any(|&b| b != 0))
                .collect();
            written += chunks.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
            nbd.write_all(&chunks, 8)?;
            off += want as u64;
            bar.set_position(off);
        }
        nbd.flush()?;
        nbd.close()?;
        bar.finish_and_clear();
        self.done(&format!(
            "imported {} into {name} ({} written, {} of zeros skipped)",
            format_size(len),
            format_size(written),
            format_size(len - written)
        ))
    }

    /// `strata audit`: the newest `limit` entries (from `since` on), newest first.
    pub fn audit(&self, limit: usize, since: Option<&str>) -> Result<()> {
        let mut q = format!("/v1/audit?limit={limit}");
        if let Some(s) = since {
            let now = crate::times::now();
            let t = crate::times::not_future(crate::times::parse_since(s, now)?, now)?;
            q.push_str(&format!("&since={t}"));
        }
        let v = self.req("GET", &q, None)?;
        self.print(
            &v,
            &[
                ("TIME (UTC)", "time:seconds"),
                ("ACTOR", "actor"),
                ("TENANT", "tenant"),
                ("ACTION", "action"),
                ("RESOURCE", "resource"),
                ("OUTCOME", "outcome"),
            ],
        )
    }

    fn done(&self, msg: &str) -> Result<()> {
        match self.out {
            Output::Table => outln!("{msg}"),
            Output::Json => outln!("{}", json!({"result": msg})),
            Output::Yaml => outln!("result: {msg}"),
        }
        Ok(())
    }
}

/// Detaches a volume when dropped (an import's own attachment, on every way out).
struct Detach<'a> {
    c: &'a Client,
    id: &'a str,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        let path = format!("/v1/volumes/{}/attachments", self.id);
        if let Err(e) = self.c.req("DELETE", &path, None) {
            eprintln!("warning: the volume stays attached: {e:#}");
        }
    }
}

/// Writes TLS client credentials in the layout qemu and libnbd read; the key is 0600.
fn write_credentials(dir: &Path, c: &wire::Credentials) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, pem, mode) in [
        ("ca-cert.pem", &c.ca_cert, 0o644),
        ("client-cert.pem", &c.cert, 0o644),
        ("client-key.pem", &c.key, 0o600),
    ] {
        let path = dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(pem.as_bytes())?;
    }
    Ok(())
}

/// Renders `key` (dotted path, optional `:size`, `:time`, ... suffix) of a JSON object for a
/// table cell.
fn cell(v: &Value, key: &str) -> String {
    let (path, fmt) = key.split_once(':').unwrap_or((key, ""));
    let mut cur = v;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match (cur, fmt) {
        (Value::Number(n), "size") => n.as_u64().map_or_else(|| n.to_string(), format_size),
        (Value::Number(n), "f1") => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        (Value::Number(n), "rate") => {
            format!("{}/s", format_size(n.as_f64().unwrap_or(0.0) as u64))
        }
        (Value::Number(n), "us") => format!("{}us", n),
        (Value::Number(n), "time") => n.as_u64().map_or_else(|| n.to_string(), utc_time),
        (Value::Number(n), "seconds") => n.as_u64().map_or_else(
            || n.to_string(),
            |t| format!("{}:{:02}", utc_time(t), t % 60),
        ),
        (Value::Null, _) => "-".into(),
        (Value::String(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

/// A request body of the API's wire types.
fn body<T: serde::Serialize>(t: &T) -> Option<Value> {
    Some(serde_json::to_value(t).expect("wire types serialize"))
}

/// A size the user typed (`10G`, `1.5T`, bytes), in bytes; the server checks its bounds.
/// Columns of a tenant's share.
const SHARE_COLS: [(&str, &str); 4] = [
    ("TENANT", "tenant"),
    ("WEIGHT", "weight"),
    ("RESERVED IOPS", "reservation_iops"),
    ("ADMITTED", "admitted"),
];

/// Columns of a pool's shared capacity.
const POOL_SHARE_COLS: [(&str, &str); 2] = [
    ("IOPS CAPACITY", "iops_capacity"),
    ("BANDWIDTH CAPACITY", "bandwidth_capacity:size"),
];

fn bytes(s: &str, field: &str) -> Result<u64> {
    strata_types::parse_size(s).map_err(|e| anyhow!("invalid_argument: {field}: {e}"))
}

/// A limit the user typed for a partial update: absent stays absent (unchanged), `none` or
/// `unlimited` is `Some(None)` (removed), anything else is parsed by `parse`.
fn limit<T>(
    v: Option<String>,
    flag: &str,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<Option<Option<T>>> {
    match v.as_deref() {
        None => Ok(None),
        Some(s) if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("unlimited") => {
            Ok(Some(None))
        }
        Some(s) => parse(s)
            .map(|v| Some(Some(v)))
            .with_context(|| format!("--{flag} {s:?}")),
    }
}

/// A count the user typed.
fn count(s: &str, flag: &str) -> Result<u64> {
    s.parse().map_err(|_| {
        anyhow!("invalid_argument: --{flag} takes a number, `none` or `unlimited`, not {s:?}")
    })
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM` UTC (civil-from-days, proleptic Gregorian).
fn utc_time(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Percent-encodes a query or path component.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The template of a progress bar counting bytes.
const BYTES_BAR: &str = "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// `PATH` or `PATH:CLASS` as a device to add.
fn new_device(spec: &str) -> Result<wire::NewDevice> {
    let (path, class) = match spec.rsplit_once(':') {
        Some((p, c)) if matches!(c, "hdd" | "ssd" | "nvme") => (p, Some(c.to_string())),
        _ => (spec, None),
    };
    let path = std::path::absolute(path)
        .map_err(|e| anyhow!("invalid_argument: device path {path}: {e}"))?;
    Ok(wire::NewDevice {
        path: path.display().to_string(),
        class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_time(1_796_118_420), "2026-12-01 09:47");
    }
}
