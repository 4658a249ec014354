//! `strata`: the daemon (`strata serve`) and the command-line interface to its API.

#[macro_use]
mod out;
mod client;
mod config;
mod datadir;
mod http;
mod inventory;
mod lbcheck;
mod nbdclient;
mod startup;
mod times;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use strata_block::Pool;
use strata_types::format_size;

use client::{Client, Output};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Storage and network virtualization for AI data centers"
)]
struct Cli {
    /// API endpoint: HOST:PORT or an http(s) URL (default: the CLI config's, else the local
    /// daemon at 127.0.0.1:7480).
    #[arg(long, global = true, env = "STRATA_ENDPOINT")]
    endpoint: Option<String>,
    /// API token (default: --data-dir's admin.token, else the CLI config's for its endpoint,
    /// else ./strata-data/admin.token when readable).
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    output: Output,
    /// The local daemon's data dir (serve: where it keeps its state; CLI: whose admin.token
    /// to use). Default ./strata-data.
    #[arg(long, global = true, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Give up a request after this long without an answer: 30s, 2m, 500ms, or seconds.
    #[arg(long, global = true, default_value = "30s", env = "STRATA_TIMEOUT")]
    timeout: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs the daemon: state store, default pool and the API. First start creates the data
    /// dir, a default file-backed pool and DIR/admin.token.
    Serve {
        /// Address the API listens on.
        #[arg(long, default_value = config::DEFAULT_LISTEN)]
        listen: String,
        /// Size of the default pool's sparse device file, created on first start.
        #[arg(long, default_value = "64G")]
        default_pool_size: String,
        /// Also serve NBD over TCP at this address, TLS required with client certificates
        /// from the daemon's CA (`strata volume attach --tcp` hands them out per tenant).
        #[arg(long)]
        nbd_listen: Option<String>,
        /// Most API connections served at once (more are closed on accept).
        #[arg(long, default_value_t = 1024)]
        api_max_connections: usize,
        /// Seconds an API client has to send a request's headers.
        #[arg(long, default_value_t = 10)]
        api_header_timeout: u64,
        /// Seconds after which an API connection that moves no byte is closed.
        #[arg(long, default_value_t = 120)]
        api_idle_timeout: u64,
        /// This machine's name in the placement pool (default: the hostname).
        #[arg(long)]
        node: Option<String>,
        /// Where control-plane state is kept: `etcd://HOST:PORT[,HOST:PORT...]` for an etcd
        /// cluster (default: the embedded store, DATA_DIR/state.redb).
        #[arg(long)]
        store: Option<String>,
        /// The master key that wraps encrypted volumes' data keys: a file of 32 random bytes
        /// outside the data dir (`strata master-key create PATH` makes one, mode 0600).
        /// Without it, `STRATA_MASTER_KEY` (64 hex digits) is used if set; with neither,
        /// encrypted volumes cannot be created and those that exist refuse I/O.
        #[arg(long, value_name = "PATH")]
        master_key_file: Option<PathBuf>,
        /// A directory whose regular files may become pool devices (`strata pool create
        /// --device`); repeat for several. The data dir's `devices/` always may. Block
        /// devices may be used wherever they are, when nothing else holds them.
        #[arg(long = "device-dir", value_name = "DIR")]
        device_dirs: Vec<PathBuf>,
        /// Most bytes per second the background resync and rebuild of replicated volumes
        /// copy, in all (e.g. 200M; 0: as fast as the devices go).
        #[arg(long, default_value = "0", value_name = "SIZE")]
        resync_rate: String,
        /// How often every pool is scrubbed by itself: a pool's scrub starts when its last one
        /// started that long ago (never scrubbed: when the pool was made). `30s`, `12h`, `7d`,
        /// `2w`; `0` or `off`: only when asked (`strata pool scrub`).
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        scrub_interval: String,
        /// Most bytes per second a scheduled scrub reads (e.g. 100M; 0: as fast as the
        /// devices go).
        #[arg(long, default_value = "100M", value_name = "SIZE")]
        scrub_rate: String,
        /// How often every pool of two devices or more is checked for balance: when the
        /// largest fill difference between two of its devices of a class is above
        /// --rebalance-threshold, a round of at most --rebalance-max-moves copy moves runs
        /// (`strata pool rebalance`). `30s`, `1h`, `1d`; `0` or `off` (the default): only
        /// when asked.
        #[arg(long, default_value = "off", value_name = "DURATION")]
        rebalance_interval: String,
        /// The spread above which a timed round runs, in percent of a device's capacity.
        #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
        rebalance_threshold: f64,
        /// Most copy moves a timed round makes (1 to 64).
        #[arg(long, default_value_t = 4, value_name = "N")]
        rebalance_max_moves: u64,
        /// Forward every veth port's packets through the switch in user space: no eBPF fast
        /// path for established flows (docs/net-engine.md, "Fast path").
        #[arg(long)]
        no_fastpath: bool,
        /// In a cluster (`--store etcd://...`): the address (`IP[:PORT]`, port 10810 when
        /// left out) where this node exports the copies it holds of volumes other nodes serve,
        /// over NBD with TLS between node certificates. Other nodes connect to it, so it must
        /// be reachable from them. Needs --join-secret-file.
        #[arg(long, value_name = "ADDR", requires = "join_secret_file")]
        advertise: Option<String>,
        /// The cluster's join secret (a file of at least 32 characters, the same on every
        /// node): it unlocks the cluster CA kept in the store, which issues this node's
        /// certificate. Needs --advertise.
        #[arg(long, value_name = "PATH", requires = "advertise")]
        join_secret_file: Option<PathBuf>,
        /// In a cluster: how long a copy on another node stays faulted (its node down, its
        /// device failing) before this node rebuilds it on a third node (30s, 5m, 1h).
        #[arg(long, default_value = "5m", value_name = "DURATION")]
        rebuild_after: String,
    },
    /// Master keys for encryption at rest.
    MasterKey {
        #[command(subcommand)]
        cmd: MasterKeyCmd,
    },
    /// Pools.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Tenants (admin).
    Tenant {
        #[command(subcommand)]
        cmd: client::TenantCmd,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        cmd: client::TokenCmd,
    },
    /// Volumes.
    Volume {
        #[command(subcommand)]
        cmd: client::VolumeCmd,
    },
    /// Snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: client::SnapshotCmd,
    },
    /// Virtual switches (admin): ports, flows in ovs-ofctl syntax, trace.
    Switch {
        #[command(subcommand)]
        cmd: client::SwitchCmd,
    },
    /// Tenant networks (VPCs) and their ports.
    Network {
        #[command(subcommand)]
        cmd: client::NetworkCmd,
    },
    /// Subnets of a network: a range, a gateway, DHCP.
    Subnet {
        #[command(subcommand)]
        cmd: client::SubnetCmd,
    },
    /// Routers between the subnets of a network.
    Router {
        #[command(subcommand)]
        cmd: client::RouterCmd,
    },
    /// Floating IPs: external addresses mapped 1:1 to ports.
    FloatingIp {
        #[command(subcommand)]
        cmd: client::FloatingIpCmd,
    },
    /// Load balancers: a VIP, listeners, weighted backends, health checks.
    LoadBalancer {
        #[command(subcommand)]
        cmd: client::LoadBalancerCmd,
    },
    /// Security groups: stateful allow rules for ports (default deny ingress).
    SecurityGroup {
        #[command(subcommand)]
        cmd: client::SecurityGroupCmd,
    },
    /// Nodes of the placement pool: inventory, hypothetical nodes for planning, cordons.
    Node {
        #[command(subcommand)]
        cmd: client::NodeCmd,
    },
    /// Jobs placed on the pool's GPUs, CPU and memory (gang: all or nothing), with a queue.
    Job {
        #[command(subcommand)]
        cmd: client::JobCmd,
    },
    /// Applies configuration files: makes the objects they name, changes what differs, and
    /// with --prune deletes what they no longer name (docs/apply.md). A second apply of the
    /// same files changes nothing.
    Apply {
        /// A YAML file of objects (`-`: standard input). Repeat for several.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<String>,
        /// Print the plan (create, update, replace, delete, with field diffs) and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete objects the files no longer name: only of kinds the files name, only
        /// within the tenants they name (never tenants themselves).
        #[arg(long)]
        prune: bool,
        /// Allow replacing (deleting and making again) objects whose fixed fields changed,
        /// such as a volume's pool or a network's CIDR: their data is lost.
        #[arg(long)]
        replace: bool,
    },
    /// Prints objects; with `-o yaml` in exactly the format `strata apply` reads.
    Get {
        /// The kind (`tenant`, `volume`, `snapshot_schedule`, `switch`, `network`, `subnet`,
        /// `router`, `security_group`, `port`, `floating_ip`, `load_balancer`, `job`), or
        /// `all`.
        kind: String,
        /// Only the object of this name.
        name: Option<String>,
        /// Only objects of this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The audit log (admin), newest first.
    Audit {
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only entries from this time on: RFC 3339 (2026-12-01T09:30:00Z) or a span before
        /// now (10m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
    },
    /// Events: what happened to devices, volumes, pools, tenants and nodes (faults, rebuilds,
    /// throttling, refusals, nodes up and down), newest first; `--follow` keeps printing.
    Events(client::EventsArgs),
    /// Prints Prometheus alerting rules for the daemon's /metrics (pool nearly full, degraded
    /// volumes, checksum errors, scrub failures, switch drops, node down, ...).
    Alerts,
    /// Checks a token against an endpoint and saves both in the CLI config (see
    /// `$STRATA_CONFIG`, default ~/.config/strata/config.yaml, mode 0600), so later commands
    /// find the daemon from any directory.
    Login,
    /// Prints a shell completion script (e.g. `strata completion bash > /etc/bash_completion.d/strata`).
    Completion {
        /// Shell. bash also completes names from the daemon (volumes, networks, ...).
        shell: clap_complete::Shell,
    },
    /// Names for shell completion: the daemon's objects that the positional argument after
    /// WORDS names (used by the bash completion script; prints nothing on any error).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words typed after `strata`, the one being completed left out.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum MasterKeyCmd {
    /// Writes a new random master key to PATH (mode 0600; refused if PATH exists). Keep it
    /// outside the data dir and back it up: without it, encrypted volumes cannot be read.
    Create {
        /// Where to write it.
        path: PathBuf,
    },
    /// Re-wraps every device's data keys under the master key in PATH (admin; the daemon
    /// reads the file, which must lie outside its data dir). No data is rewritten. Start the
    /// daemon with `--master-key-file PATH` from then on; keep the old key until every device
    /// says rotated.
    Rotate {
        /// The new master key file (`strata master-key create` makes one).
        path: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Lists pools.
    List,
    /// Creates a pool of devices (admin). Each device becomes an engine pool of its own and a
    /// failure domain: a volume's copies go to distinct devices. Regular files must lie under
    /// a device directory (`strata serve --device-dir`); block devices must be unused.
    Create {
        /// Pool name.
        name: String,
        /// A device: `PATH` or `PATH:CLASS` (class `hdd`, `ssd` or `nvme`; `ssd` when not
        /// given). Repeat for each device.
        #[arg(long = "device", value_name = "PATH[:CLASS]", required = true)]
        devices: Vec<String>,
        /// Copies a new volume of the pool gets when its create names none (1 to 3).
        #[arg(long, default_value_t = 1)]
        replicas: u64,
        /// Format devices that hold data that is not Strata's (their content is lost).
        #[arg(long)]
        force: bool,
    },
    /// Adds a device to a pool (admin).
    AddDevice {
        /// Pool name.
        name: String,
        /// The device: `PATH` or `PATH:CLASS`.
        #[arg(value_name = "PATH[:CLASS]")]
        device: String,
        /// Format a device that holds data that is not Strata's (its content is lost).
        #[arg(long)]
        force: bool,
    },
    /// Scrubs a pool (admin): reads every allocated block of every copy of its volumes,
    /// rewrites bad blocks of replicated volumes from a good copy, and reports those it
    /// cannot repair. Starts one (or follows the one running) and shows its progress until
    /// it is done.
    Scrub {
        /// Pool name.
        name: String,
        /// Most bytes per second to read (e.g. 100M; 0: as fast as the devices go).
        #[arg(long, default_value = "0", value_name = "SIZE")]
        rate: String,
        /// Start it and return at once (`strata pool scrub-status` shows it later).
        #[arg(long)]
        no_wait: bool,
    },
    /// Shows where a pool's last scrub stands (admin).
    ScrubStatus {
        /// Pool name.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Removes a device from a pool (admin). A device that holds copies is drained first:
    /// it takes no new copies, its copies move to the pool's other devices, then it leaves.
    /// Refused when a copy would have nowhere to go. Waits until it is gone, showing how many
    /// copies are left.
    RemoveDevice {
        /// Pool name.
        name: String,
        /// Device id (`strata pool show` lists them).
        device: String,
        /// Start the drain and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Opens a faulted or missing device again without a restart (admin), once it is back
    /// (a cable reseated, a path restored): it must be the same device it was. Its copies of
    /// replicated volumes resync only what was written while it was away; a copy already
    /// rebuilt elsewhere stays there.
    OnlineDevice {
        /// Pool name.
        name: String,
        /// Device id (`strata pool show` lists them).
        device: String,
    },
    /// Runs one rebalance round of a pool (admin): at most --max-moves copy moves within a
    /// device class that bring the devices' fill closest to even. Only one-copy volumes
    /// move (through a temporary second copy, so the volume keeps serving from its old copy
    /// until the new one holds everything); replicated volumes stay. Waits until the moves
    /// are done.
    Rebalance {
        /// Pool name.
        name: String,
        /// Most copy moves (1 to 64; 8 when not given).
        #[arg(long, value_name = "N")]
        max_moves: Option<u64>,
        /// Only show the moves and the spread before and after: change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start the moves and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Shows a pool's devices and utilization.
    Show {
        /// Pool name.
        #[arg(default_value = "default")]
        name: String,
        /// Read the pool from the data dir directly (the daemon must not be running).
        #[arg(long)]
        offline: bool,
    },
    /// Changes a pool's settings (admin).
    Set {
        /// Pool name.
        name: String,
        /// Most the volumes may provision, as a multiple of the capacity (`0` or `unlimited`:
        /// no limit).
        #[arg(long)]
        overcommit: String,
    },
    /// Sets what each of the pool's devices sustains, which tenants then share by weight when
    /// their requests wait for it (admin; see `strata tenant set-share`). Naming neither turns
    /// sharing off: every request is admitted at once (per-volume limits still apply).
    SetShare {
        /// Pool name.
        name: String,
        /// Operations per second each device of the pool sustains.
        #[arg(long, value_name = "N")]
        iops_capacity: Option<u64>,
        /// Bytes per second each device of the pool sustains (e.g. 2G).
        #[arg(long, value_name = "SIZE")]
        bandwidth_capacity: Option<String>,
    },
    /// Shows the capacity the pool shares between tenants (admin).
    ShowShare {
        /// Pool name.
        #[arg(default_value = "default")]
        name: String,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
    match cli.cmd {
        Cmd::Serve {
            listen,
            default_pool_size,
            nbd_listen,
            api_max_connections,
            api_header_timeout,
            api_idle_timeout,
            node,
            store,
            master_key_file,
            device_dirs,
            resync_rate,
            scrub_interval,
            scrub_rate,
            rebalance_interval,
            rebalance_threshold,
            rebalance_max_moves,
            no_fastpath,
            advertise,
            join_secret_file,
            rebuild_after,
        } => {
            if no_fastpath {
                strata_control::net::set_fastpath_default(false);
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                // Colours for a terminal only: logs redirected to a file stay plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            serve(
                &data_dir,
                Keep {
                    store: store.as_deref(),
                    master_key_file: master_key_file.as_deref(),
                    device_dirs: &device_dirs,
                    resync_rate: strata_types::parse_size(&resync_rate)
                        .map_err(|e| anyhow::anyhow!("invalid_argument: --resync-rate: {e}"))?,
                    scrub_interval: match scrub_interval.trim() {
                        "0" | "off" => 0,
                        s => strata_control::parse_duration(s).ok_or_else(|| {
                            anyhow::anyhow!(
                                "invalid_argument: --scrub-interval: {s:?} is not a duration \
                                 such as 12h, 7d or 2w (0 or off: none)"
                            )
                        })?,
                    },
                    scrub_rate: strata_types::parse_size(&scrub_rate)
                        .map_err(|e| anyhow::anyhow!("invalid_argument: --scrub-rate: {e}"))?,
                    rebalance: rebalance_timer(
                        &rebalance_interval,
                        rebalance_threshold,
                        rebalance_max_moves,
                    )?,
                    cluster: match (advertise, join_secret_file) {
                        // Refused before anything is created.
                        (Some(_), Some(_)) if store.is_none() => bail!(
                            "invalid_argument: --advertise: copies on other nodes need a \
                             cluster store (--store etcd://...)"
                        ),
                        (Some(a), Some(f)) => Some(NodePortArgs {
                            advertise: advertise_addr(&a)?,
                            join_secret_file: private_file(&f)?,
                            rebuild_after: strata_control::parse_duration(rebuild_after.trim())
                                .filter(|d| *d > 0)
                                .ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "invalid_argument: --rebuild-after: {rebuild_after:?} \
                                         is not a duration such as 30s, 5m or 1h"
                                    )
                                })?,
                        }),
                        _ => None,
                    },
                },
                node.as_deref(),
                &listen,
                &default_pool_size,
                nbd_listen.as_deref(),
                http::Limits {
                    max_connections: api_max_connections.max(1),
                    header_timeout: std::time::Duration::from_secs(api_header_timeout.max(1)),
                    idle_timeout: std::time::Duration::from_secs(api_idle_timeout.max(1)),
                    ..http::Limits::default()
                },
            )
        }
        Cmd::MasterKey {
            cmd: MasterKeyCmd::Create { path },
        } => {
            let k = strata_block::KeyFile::generate(&path)
                .with_context(|| format!("writing a master key to {}", path.display()))?;
            println!(
                "master key {} written to {} (mode 0600): start the daemon with \
                 --master-key-file {}, and keep a copy somewhere safe",
                strata_block::KeyWrapper::key_id(&k),
                path.display(),
                path.display()
            );
            Ok(())
        }
        Cmd::Alerts => client::print_alerts(cli.output),
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
            if shell == clap_complete::Shell::Bash {
                script.extend_from_slice(client::BASH_HOOK.as_bytes());
            }
            out::write_bytes(&script);
            Ok(())
        }
        Cmd::Complete { words } => {
            use clap::CommandFactory;
            let words: Vec<String> = words.into_iter().skip_while(|w| w == "--").collect();
            let root = Cli::command();
            let Some(kind) = client::positional_at(&root, &words)
                .and_then(|(path, arg)| client::kind_of(&path, &arg))
            else {
                return Ok(());
            };
            // Quiet and quick: a TAB must never print an error or hang.
            let Ok(target) = config::resolve(
                cli.endpoint.as_deref(),
                cli.token.clone(),
                cli.data_dir.as_deref(),
            ) else {
                return Ok(());
            };
            let c = Client::new(target, std::time::Duration::from_secs(2), cli.output);
            if let Ok(names) = c.complete_names(kind) {
                let mut text = names.join("\n");
                text.push('\n');
                out::write_bytes(text.as_bytes());
            }
            Ok(())
        }
        Cmd::Pool {
            cmd: PoolCmd::Show { offline: true, .. },
        } => {
            let (_lock, pool) = startup::open_data_dir(&data_dir, None)?;
            print_pool(&pool);
            Ok(())
        }
        Cmd::Login => {
            let Some(endpoint) = cli.endpoint.as_deref() else {
                bail!("invalid_argument: name the daemon with --endpoint HOST:PORT (or URL)");
            };
            let path = config::path().ok_or_else(|| {
                anyhow::anyhow!("no place for the CLI config: set STRATA_CONFIG or HOME")
            })?;
            let target = config::Target {
                base: config::normalize_endpoint(endpoint)?,
                token: cli.token.clone().unwrap_or_default(),
                source: config::TokenSource::Flag,
            };
            Client::new(target, parse_timeout(&cli.timeout)?, cli.output).login(&path)
        }
        cmd => {
            let target = config::resolve(
                cli.endpoint.as_deref(),
                cli.token.clone(),
                cli.data_dir.as_deref(),
            )?;
            let c = Client::new(target, parse_timeout(&cli.timeout)?, cli.output);
            match cmd {
                Cmd::Pool { cmd: PoolCmd::List } => c.pools(None),
                Cmd::Pool {
                    cmd:
                        PoolCmd::Create {
                            name,
                            devices,
                            replicas,
                            force,
                        },
                } => c.pool_create(&name, &devices, replicas, force),
                Cmd::Pool {
                    cmd:
                        PoolCmd::AddDevice {
                            name,
                            device,
                            force,
                        },
                } => c.pool_add_device(&name, &device, force),
                Cmd::Pool {
                    cmd:
                        PoolCmd::RemoveDevice {
                            name,
                            device,
                            no_wait,
                        },
                } => c.pool_remove_device(&name, &device, !no_wait),
                Cmd::Pool {
                    cmd: PoolCmd::OnlineDevice { name, device },
                } => c.pool_online_device(&name, &device),
                Cmd::Pool {
                    cmd:
                        PoolCmd::Scrub {
                            name,
                            rate,
                            no_wait,
                        },
                } => c.pool_scrub(&name, &rate, !no_wait),
                Cmd::Pool {
                    cmd: PoolCmd::ScrubStatus { name },
                } => c.pool_scrub_status(&name),
                Cmd::Pool {
                    cmd:
                        PoolCmd::Rebalance {
                            name,
                            max_moves,
                            dry_run,
                            no_wait,
                        },
                } => c.pool_rebalance(&name, max_moves, dry_run, !no_wait),
                Cmd::Pool {
                    cmd: PoolCmd::Show { name, .. },
                } => c.pools(Some(&name)),
                Cmd::Pool {
                    cmd:
                        PoolCmd::SetShare {
                            name,
                            iops_capacity,
                            bandwidth_capacity,
                        },
                } => c.pool_set_share(&name, iops_capacity, bandwidth_capacity.as_deref()),
                Cmd::Pool {
                    cmd: PoolCmd::ShowShare { name },
                } => c.pool_show_share(&name),
                Cmd::Pool {
                    cmd: PoolCmd::Set { name, overcommit },
                } => c.pool_set(&name, &overcommit),
                Cmd::Tenant { cmd } => c.tenant(cmd),
                Cmd::Token { cmd } => c.token(cmd),
                Cmd::Volume { cmd } => c.volume(cmd),
                Cmd::Snapshot { cmd } => c.snapshot(cmd),
                Cmd::Audit { limit, since } => c.audit(limit, since.as_deref()),
                Cmd::Events(a) => c.events(&a),
                Cmd::Switch { cmd } => c.switch(cmd),
                Cmd::Apply {
                    files,
                    dry_run,
                    prune,
                    replace,
                } => c.apply(&client::ApplyArgs {
                    files,
                    dry_run,
                    prune,
                    replace,
                }),
                Cmd::Get { kind, name, tenant } => c.get(&kind, name.as_deref(), tenant.as_deref()),
                Cmd::Node { cmd } => c.node(cmd),
                Cmd::Job { cmd } => c.job(cmd),
                Cmd::Network { cmd } => c.network(cmd),
                Cmd::Subnet { cmd } => c.subnet(cmd),
                Cmd::Router { cmd } => c.router(cmd),
                Cmd::SecurityGroup { cmd } => c.security_group(cmd),
                Cmd::FloatingIp { cmd } => c.floating_ip(cmd),
                Cmd::LoadBalancer { cmd } => c.load_balancer(cmd),
                Cmd::MasterKey {
                    cmd: MasterKeyCmd::Rotate { path },
                } => c.master_key_rotate(&path),
                Cmd::Serve { .. }
                | Cmd::Alerts
                | Cmd::Completion { .. }
                | Cmd::Complete { .. }
                | Cmd::Login
                | Cmd::MasterKey {
                    cmd: MasterKeyCmd::Create { .. },
                } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// A duration the user typed: `30s`, `2m`, `500ms`, `1h`, or plain seconds.
fn parse_timeout(s: &str) -> Result<std::time::Duration> {
    use std::time::Duration;
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| anyhow::anyhow!("invalid_argument: --timeout {s:?}: e.g. 30s, 2m, 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid_argument: --timeout {s:?}: the unit is ms, s, m or h"),
    };
    Ok(Duration::from_secs_f64(secs.min(86_400.0)))
}

/// The directory under the data dir of replicated volumes' write-intent logs.
const REPLICAS_DIR: &str = "replicas";

/// Resync workers: each runs passes of the resync job, so reads of one run of regions overlap
/// writes of another (and one worker in a target's commit does not stall the copy). Three on
/// this 2-core class of machine: `examples/rebuild_cost` copied 578–924 MiB/s with two workers
/// and 242–573 with four (they wait on the source's cold reads); three was not measured alone.
const RESYNC_WORKERS: usize = 3;

/// The scan's fallback period: faults, added devices, drains and finished copies wake it.
const SCAN_FALLBACK: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an idle worker sleeps when nothing wakes it (a set opened by a client's first I/O
/// raises nothing).
const WORKER_FALLBACK: std::time::Duration = std::time::Duration::from_secs(1);

/// The `--resync-rate` budget shared by the workers: a virtual clock that each pass moves on
/// by its bytes' share of a second; a worker sleeps until the clock catches up.
struct Pace {
    rate: u64,
    next: std::sync::Mutex<std::time::Instant>,
}

impl Pace {
    /// Charges `n` bytes copied by a pass that began at `began`; returns how long to sleep.
    fn charge(&self, n: u64, began: std::time::Instant) -> std::time::Duration {
        let now = std::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let from = (*next).max(began);
        *next = from + std::time::Duration::from_secs_f64(n as f64 / self.rate as f64);
        next.saturating_duration_since(now)
    }
}

/// Runs the background rebuild and resync of replicated volumes until the daemon stops: one
/// scan thread (open sets, start rebuilds of lost copies, move copies off draining devices),
/// woken by the controller's signals or every [`SCAN_FALLBACK`], and [`RESYNC_WORKERS`] workers
/// copying regions, at most `rate` bytes per second in all (0: as fast as the devices go).
fn spawn_resync(ctl: &Arc<strata_control::Controller>, rate: u64) -> Result<()> {
    let signals = ctl.rebuild_signals();
    let s = signals.clone();
    ctl.storage().on_fault(Arc::new(move || s.raise_scan()));
    let weak = Arc::downgrade(ctl);
    let sig = signals.clone();
    std::thread::Builder::new()
        .name("rebuild-scan".into())
        .spawn(move || loop {
            let seen = sig.scan_seen();
            let Some(c) = weak.upgrade() else { break };
            c.start_rebuilds();
            c.drain_pass();
            drop(c);
            // A scan may have started rebuilds, moves or resyncs.
            sig.raise_work();
            sig.wait_scan(seen, SCAN_FALLBACK);
        })
        .context("starting the rebuild scan thread")?;
    let pace = (rate > 0).then(|| {
        Arc::new(Pace {
            rate,
            next: std::sync::Mutex::new(std::time::Instant::now()),
        })
    });
    for k in 0..RESYNC_WORKERS {
        let weak = Arc::downgrade(ctl);
        let (sig, pace) = (signals.clone(), pace.clone());
        std::thread::Builder::new()
            .name(format!("resync-{k}"))
            .spawn(move || loop {
                let seen = sig.work_seen();
                let Some(c) = weak.upgrade() else { break };
                let began = std::time::Instant::now();
                let n = c.resync_pass();
                drop(c);
                if n == 0 {
                    sig.wait_work(seen, WORKER_FALLBACK);
                } else if let Some(p) = &pace {
                    std::thread::sleep(p.charge(n, began));
                }
            })
            .context("starting a resync worker")?;
    }
    Ok(())
}

/// The scrub schedule: every 5 s (a result is stored that soon after a scrub ends), the
/// controller stores ended scrubs and starts those due (`--scrub-interval`, at `--scrub-rate`).
fn spawn_scrub_schedule(
    ctl: &Arc<strata_control::Controller>,
    interval: u64,
    rate: u64,
) -> Result<()> {
    let weak = Arc::downgrade(ctl);
    std::thread::Builder::new()
        .name("scrub-schedule".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let Some(c) = weak.upgrade() else { break };
            c.scrub_schedule(interval, rate);
        })
        .context("starting the scrub schedule")?;
    Ok(())
}

/// The snapshot schedules' runner: twice a second (a run starts within half a second of its
/// time; names have second precision), the controller runs the schedules that are due.
fn spawn_snapshot_schedules(ctl: &Arc<strata_control::Controller>) -> Result<()> {
    let weak = Arc::downgrade(ctl);
    std::thread::Builder::new()
        .name("snapshot-schedules".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let Some(c) = weak.upgrade() else { break };
            c.run_snapshot_schedules();
        })
        .context("starting the snapshot schedules' runner")?;
    Ok(())
}

/// The directory under the data dir whose regular files may become pool devices.
const DEVICES_DIR: &str = "devices";

/// The directory of the tenants' NBD sockets (`TENANT.sock`) under the data dir.
const TENANT_SOCKETS: &str = "sockets";

/// Where `strata serve` keeps its state and what unlocks it.
struct Keep<'a> {
    /// `--store`: etcd endpoints, or none for the embedded store.
    store: Option<&'a str>,
    /// `--master-key-file`.
    master_key_file: Option<&'a Path>,
    /// `--device-dir`.
    device_dirs: &'a [PathBuf],
    /// `--resync-rate`, bytes per second (0: unlimited).
    resync_rate: u64,
    /// `--scrub-interval`, seconds (0: no schedule).
    scrub_interval: u64,
    /// `--scrub-rate`, bytes per second (0: unlimited).
    scrub_rate: u64,
    /// `--rebalance-interval`, `--rebalance-threshold`, `--rebalance-max-moves` (none: off).
    rebalance: Option<RebalanceTimer>,
    /// `--advertise` and `--join-secret-file` (none: this node holds no copies for others).
    cluster: Option<NodePortArgs>,
}

/// Where this node's port listens and what unlocks the cluster CA.
struct NodePortArgs {
    /// `IP:PORT`.
    advertise: std::net::SocketAddr,
    join_secret_file: PathBuf,
    /// Seconds a remote copy stays faulted before it is rebuilt on a third node.
    rebuild_after: u64,
}

/// The port of `--advertise` when it names none.
const NODE_PORT: u16 = 10810;

/// `--advertise`: `IP[:PORT]`, an address other nodes can reach (not unspecified).
fn advertise_addr(a: &str) -> Result<std::net::SocketAddr> {
    let parsed = a
        .parse::<std::net::SocketAddr>()
        .ok()
        .or_else(|| {
            a.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, NODE_PORT))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("invalid_argument: --advertise: {a:?} is not IP or IP:PORT")
        })?;
    if parsed.ip().is_unspecified() {
        bail!(
            "invalid_argument: --advertise: {a:?} is unspecified; give the address other \
             nodes reach this one at"
        );
    }
    Ok(parsed)
}

/// `--join-secret-file`: refused when it is not a regular file or when others than its owner
/// may read it (mode bits 077), as ssh refuses a private key: the secret unlocks the cluster
/// CA, and so every node's identity.
fn private_file(f: &std::path::Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(f)
        .with_context(|| format!("invalid_argument: --join-secret-file: {}", f.display()))?;
    if !m.is_file() {
        bail!(
            "invalid_argument: --join-secret-file: {} is not a file",
            f.display()
        );
    }
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "invalid_argument: --join-secret-file: {} has mode {mode:04o}; others may read it \
             (chmod 0600 it: the secret unlocks the cluster CA)",
            f.display()
        );
    }
    Ok(f.to_path_buf())
}

/// Opens the node port: this node's certificate from the cluster CA (unlocked by the join
/// secret; the first node makes the CA), an NBD server of the copies this node holds, TLS
/// required, node certificates only, and the agent that makes and removes those copies
/// (`strata-control/src/controller/cluster_copies.rs`).
fn open_node_port(
    ctl: &Arc<strata_control::Controller>,
    node: &str,
    args: &NodePortArgs,
) -> Result<Arc<strata_nbd::NbdServer>> {
    let raw = std::fs::read(&args.join_secret_file).with_context(|| {
        format!(
            "reading the join secret {}",
            args.join_secret_file.display()
        )
    })?;
    let secret = strata_control::controller::cluster_ca::join_secret(&raw)
        .map_err(|e| anyhow::anyhow!("invalid_argument: --join-secret-file: {e}"))?;
    let ca = ctl
        .cluster_ca(&secret)
        .map_err(|e| anyhow::anyhow!("unlocking the cluster CA: {e}"))?;
    let host = args.advertise.ip().to_string();
    let creds = ca
        .node(node, &[node.to_string(), host.clone()])
        .context("issuing this node's certificate")?;
    let (ca_pem, cert, key) = (
        creds.ca_cert.as_bytes(),
        creds.cert.as_bytes(),
        creds.key.as_bytes(),
    );
    let server = strata_nbd::tls_server_config(ca_pem, cert, key)
        .map_err(|e| anyhow::anyhow!("node port TLS: {e}"))?;
    let client = strata_nbd::client::tls_client_config(ca_pem, cert, key)
        .map_err(|e| anyhow::anyhow!("node port TLS (client): {e}"))?;
    let client = strata_nbd::client::ClientTls::new(client, &host)
        .map_err(|e| anyhow::anyhow!("node port TLS (client): {e}"))?;
    let cfg = strata_nbd::ServerConfig {
        authorize: Some(ctl.node_port_authorizer()),
        tls: Some(server),
        tls_required: true,
        ..Default::default()
    };
    let srv = Arc::new(strata_nbd::NbdServer::with_source(
        Arc::new(strata_control::controller::CopySource::new(ctl)),
        cfg,
    ));
    let bound = srv
        .serve_tcp(args.advertise.to_string())
        .with_context(|| format!("node port on {}", args.advertise))?;
    ctl.set_rebuild_after(std::time::Duration::from_secs(args.rebuild_after));
    ctl.open_node_port(&bound.to_string(), client)
        .map_err(|e| anyhow::anyhow!("recording the node port: {e}"))?;
    tracing::info!(node_port = %bound, "exporting copies to other nodes");
    let weak = Arc::downgrade(ctl);
    std::thread::Builder::new()
        .name("copy-agent".into())
        .spawn(move || loop {
            let Some(c) = weak.upgrade() else { break };
            if let Err(e) = c.copy_agent_pass() {
                tracing::warn!(error = %e, "copy agent pass failed");
            }
            // Other nodes' network changes, and tunnels to nodes that recorded their port.
            c.network_agent_pass();
            drop(c);
            std::thread::sleep(std::time::Duration::from_millis(500));
        })
        .context("starting the copy agent")?;
    Ok(srv)
}

/// The rebalance timer's settings.
struct RebalanceTimer {
    /// Seconds between checks.
    interval: u64,
    /// Spread (a fraction of capacity) above which a round runs.
    threshold: f64,
    /// Moves per round.
    max_moves: u64,
}

/// The rebalance timer from its flags (`None`: off), refusing values out of range.
fn rebalance_timer(
    interval: &str,
    threshold: f64,
    max_moves: u64,
) -> Result<Option<RebalanceTimer>> {
    let interval = match interval.trim() {
        "0" | "off" => return Ok(None),
        s => strata_control::parse_duration(s).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid_argument: --rebalance-interval: {s:?} is not a duration such as 30s, \
                 1h or 1d (0 or off: none)"
            )
        })?,
    };
    if !(threshold.is_finite() && (0.0..=100.0).contains(&threshold)) {
        bail!(
            "invalid_argument: --rebalance-threshold: {threshold} is not a percentage (0 to 100)"
        );
    }
    if !(1..=strata_control::controller::REBALANCE_MAX_MOVES).contains(&max_moves) {
        bail!(
            "invalid_argument: --rebalance-max-moves: {max_moves} is out of range (1 to {})",
            strata_control::controller::REBALANCE_MAX_MOVES
        );
    }
    Ok(Some(RebalanceTimer {
        interval: interval.max(1),
        threshold: threshold / 100.0,
        max_moves,
    }))
}

/// The rebalance timer: every interval, a round of each pool whose spread is above the
/// threshold (`Controller::rebalance_schedule`), its moves finished by the resync workers and
/// the scan like a drain's.
fn spawn_rebalance_timer(
    ctl: &Arc<strata_control::Controller>,
    t: Option<RebalanceTimer>,
) -> Result<()> {
    let Some(t) = t else { return Ok(()) };
    let weak = Arc::downgrade(ctl);
    std::thread::Builder::new()
        .name("rebalance".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(t.interval));
            let Some(c) = weak.upgrade() else { break };
            c.rebalance_schedule(t.threshold, t.max_moves);
        })
        .context("starting the rebalance timer")?;
    Ok(())
}

/// Every 5 s, the rate-limited event sources: QoS waits per volume, device error counts
/// (`Controller::observe_for_events`, at most one event per object per minute).
fn spawn_event_watch(ctl: &Arc<strata_control::Controller>) -> Result<()> {
    let ctl = ctl.clone();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            ctl.observe_for_events();
        })
        .context("starting the event watch thread")?;
    Ok(())
}

/// On etcd, the node's liveness: its lease renewed, its alive key kept, the leader's key
/// tried for (`strata-control/src/controller/liveness.rs`). The first tick runs before the
/// daemon says it serves, so a node is `up` once it answers.
fn spawn_liveness(ctl: &Arc<strata_control::Controller>) -> Result<()> {
    ctl.liveness_tick();
    let ctl = ctl.clone();
    std::thread::Builder::new()
        .name("liveness".into())
        .spawn(move || loop {
            std::thread::sleep(strata_control::controller::RENEW_EVERY);
            ctl.liveness_tick();
        })
        .context("starting the liveness thread")?;
    Ok(())
}

fn serve(
    dir: &Path,
    keep: Keep<'_>,
    node: Option<&str>,
    listen: &str,
    size: &str,
    nbd_listen: Option<&str>,
    api_limits: http::Limits,
) -> Result<()> {
    // A data dir keeps the name it first ran under (`DIR/node`): its pools are that node's.
    let node_name = match node {
        Some(n) => n.to_string(),
        None => startup::stored_node(dir).unwrap_or_else(inventory::hostname),
    };
    let (_lock, pool, ctl, first_secret) = startup::init(dir, size, keep.store, &node_name)?;
    datadir::create(dir, &[Path::new(DEVICES_DIR)])?;
    let mut dirs = vec![std::path::absolute(dir.join(DEVICES_DIR))?];
    dirs.extend(keep.device_dirs.iter().cloned());
    ctl.storage().set_device_dirs(dirs);
    ctl.set_data_dir(std::path::absolute(dir)?);
    if let Some(w) = startup::master_key(dir, keep.master_key_file)? {
        let id = w.key_id();
        // Every device's engine pool gets the key (each keeps its own data keys).
        let unlock = ctl.storage().set_key_wrapper(w);
        tracing::info!(master_key = %id, unlocked = unlock.unlocked.len(), "master key given");
        for (key, needs) in &unlock.locked {
            tracing::warn!(
                data_key = key,
                master_key = %needs,
                "an encrypted lineage's data key is wrapped by another master key: its volumes refuse I/O"
            );
        }
    } else if !pool.data_keys().is_empty() {
        tracing::warn!(
            keys = pool.data_keys().len(),
            "the pool has encrypted volumes but no master key was given (--master-key-file or \
             STRATA_MASTER_KEY): they refuse I/O"
        );
    }
    datadir::create(dir, &[Path::new(REPLICAS_DIR)])?;
    ctl.set_intent_dir(std::path::absolute(dir.join(REPLICAS_DIR))?);
    let ctl = Arc::new(ctl);
    spawn_resync(&ctl, keep.resync_rate)?;
    spawn_scrub_schedule(&ctl, keep.scrub_interval, keep.scrub_rate)?;
    spawn_rebalance_timer(&ctl, keep.rebalance)?;
    spawn_event_watch(&ctl)?;
    spawn_snapshot_schedules(&ctl)?;
    lbcheck::spawn(&ctl).context("starting the load-balancer health checker")?;
    // The local node joins the placement pool with what this machine has.
    ctl.register_local_node(inventory::local_node(&node_name, &pool))
        .context("registering the local node")?;
    spawn_liveness(&ctl)?;
    let node_port = match &keep.cluster {
        Some(args) => Some(open_node_port(&ctl, &node_name, args)?),
        None => None,
    };
    // The NBD server exports attached volumes only: on the admin socket `nbd.sock` (every
    // attached volume), on one socket per tenant in `sockets/` (that tenant's only), and, when
    // asked, on TCP with TLS required, where a certificate the daemon issued and did not revoke
    // opens only its tenant's volumes. The data dir is 0700: reaching a socket at all takes
    // the daemon's user or a bind mount (docs/nbd.md).
    let exports = ctl.exports();
    let mut cfg = strata_nbd::ServerConfig {
        filter: Some(strata_nbd::ExportFilter(Arc::new(move |name: &str| {
            exports.read().contains(name)
        }))),
        authorize: Some(ctl.nbd_authorizer()),
        snapshot_names: Some(ctl.nbd_snapshot_names()),
        ..Default::default()
    };
    let mut pki = None;
    if let Some(addr) = nbd_listen {
        let p = Arc::new(
            strata_control::pki::Pki::load_or_create(&dir.join("tls"))
                .context("loading the NBD certificate authority")?,
        );
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !host.is_empty() && host != "0.0.0.0" && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
        let server = p
            .server(&names)
            .context("issuing the NBD server certificate")?;
        cfg.tls = Some(
            strata_nbd::tls_server_config(
                server.ca_cert.as_bytes(),
                server.cert.as_bytes(),
                server.key.as_bytes(),
            )
            .map_err(|e| anyhow::anyhow!("NBD TLS configuration: {e}"))?,
        );
        cfg.tls_required = true;
        cfg.admit = Some(ctl.nbd_admit());
        pki = Some(p);
    }
    // Exports are the daemon's volumes wherever their copies are (one device, or a replica
    // set over several): the controller's source resolves them.
    let source = Arc::new(strata_control::controller::VolumeSource::new(&ctl));
    let nbd = Arc::new(strata_nbd::NbdServer::with_source(source, cfg));
    let sock = std::path::absolute(dir.join("nbd.sock"))?;
    nbd.serve_unix(&sock)
        .with_context(|| format!("NBD listener on {}", sock.display()))?;
    datadir::set_mode(&sock, datadir::FILE_MODE)?;
    ctl.set_nbd_socket(sock);
    datadir::create(dir, &[Path::new(TENANT_SOCKETS)])?;
    ctl.connect_nbd(nbd.clone(), std::path::absolute(dir.join(TENANT_SOCKETS))?)
        .map_err(|e| anyhow::anyhow!("opening the tenants' NBD sockets: {e}"))?;
    if let (Some(addr), Some(p)) = (nbd_listen, pki) {
        let bound = nbd
            .serve_tcp(addr)
            .with_context(|| format!("NBD TCP listener on {addr}"))?;
        // Clients need an address they can reach: an unspecified bind is reached on loopback.
        let shown = if bound.ip().is_unspecified() {
            format!("127.0.0.1:{}", bound.port())
        } else {
            bound.to_string()
        };
        tracing::info!(nbd_tcp = %shown, "NBD over TCP with TLS");
        ctl.set_nbd_tcp(shown, p);
    }
    let api_limits = fd_budget(api_limits);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        // Handlers first: a SIGTERM that arrives once we say "serving" must stop us cleanly.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        startup::record_endpoint(dir, &listener.local_addr()?)?;
        if let Some(secret) = &first_secret {
            startup::save_cli_config(&listener.local_addr()?, secret);
        }
        let info = pool.info();
        tracing::info!(
            pool = %info.id,
            capacity = info.capacity,
            allocated = info.allocated,
            listen = %listener.local_addr()?,
            "strata serving"
        );
        let stopping = ctl.clone();
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
            // Followers of `strata events` answer now, not at the end of their long poll.
            stopping.close_events_at_stop();
        };
        http::serve(
            listener,
            // The console answers `/` and `/console/...` only; every other path, `/v1` and
            // its JSON 404s included, is the API's.
            strata_console::router().merge(strata_control::api::router(ctl.clone())),
            api_limits,
            Arc::new(http::Counters::default()),
            shutdown,
        )
        .await?;
        anyhow::Ok(())
    })?;
    // The others see this node down, and elect another leader, at once.
    ctl.leave_cluster();
    nbd.shutdown();
    if let Some(p) = &node_port {
        p.shutdown();
    }
    ctl.close_sets();
    ctl.persist_scrubs();
    ctl.shutdown();
    pool.flush().context("flushing the pool")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Raises the descriptor limit to its hard maximum and fits the API's connection limit inside
/// it, keeping [`FD_RESERVE`] descriptors for everything else (devices, the store, NBD
/// connections and listeners, switch ports): API clients can then never take the descriptors
/// NBD needs.
fn fd_budget(mut limits: http::Limits) -> http::Limits {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the descriptor limit");
        }
    }
    let have = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let room = usize::try_from(have.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if room < limits.max_connections {
        tracing::warn!(
            nofile = have,
            api_connections = room,
            "descriptor limit is low: fewer API connections allowed"
        );
        limits.max_connections = room.max(16);
    }
    limits
}

/// Descriptors kept out of the API's budget (see [`fd_budget`]).
const FD_RESERVE: u64 = 2048;

fn print_pool(pool: &Pool) {
    let i = pool.info();
    outln!("pool {}", i.id);
    outln!(
        "capacity {}  allocated {}  free {}  provisioned {}",
        format_size(i.capacity),
        format_size(i.allocated),
        format_size(i.free),
        format_size(i.provisioned)
    );
    outln!(
        "{:<4} {:<6} {:>10} {:>10}  PATH",
        "IDX",
        "CLASS",
        "CAPACITY",
        "USED"
    );
    for d in &i.devices {
        outln!(
            "{:<4} {:<6} {:>10} {:>10}  {}{}",
            d.index,
            d.class,
            format_size(d.capacity),
            format_size(d.allocated),
            d.label,
            if d.metadata { " (metadata)" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every argument of the whole tree has help text (`--help` is the
    /// manual a new user reads first).
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", c.get_name());
            if c.get_about().is_none() && path != "strata" {
                missing.push(format!("{path} (the command)"));
            }
            for a in c.get_arguments() {
                if a.is_hide_set() || matches!(a.get_id().as_str(), "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                if s.get_name() != "help" {
                    walk(s, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
