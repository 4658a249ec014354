//! `strata`: the daemon (`strata serve`) and the command-line interface to its API.

mod client;
mod datadir;
mod http;
mod nbdclient;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use strata_block::{BlockDevice, DeviceSpec, FileDevice, Pool};
use strata_types::{format_size, parse_size, DeviceClass};

use client::{Client, Output};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Storage and network virtualization for AI data centers"
)]
struct Cli {
    /// API endpoint (default: the local daemon).
    #[arg(long, global = true, env = "STRATA_ENDPOINT")]
    endpoint: Option<String>,
    /// API token (default: the local daemon's admin.token, when readable).
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    output: Output,
    /// The local daemon's data dir (for the default endpoint and token).
    #[arg(
        long,
        global = true,
        default_value = "./strata-data",
        env = "STRATA_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs the daemon: state store, default pool and the API. First start creates the data
    /// dir, a default file-backed pool and DIR/admin.token.
    Serve {
        /// Address the API listens on.
        #[arg(long, default_value = client::DEFAULT_LISTEN)]
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
    /// The audit log (admin).
    Audit {
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Prints a shell completion script (e.g. `strata completion bash > /etc/bash_completion.d/strata`).
    Completion {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Lists pools.
    List,
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
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            listen,
            default_pool_size,
            nbd_listen,
            api_max_connections,
            api_header_timeout,
            api_idle_timeout,
        } => {
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
                &cli.data_dir,
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
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Pool {
            cmd: PoolCmd::Show { offline: true, .. },
        } => {
            let (_lock, pool) = open_data_dir(&cli.data_dir, None)?;
            print_pool(&pool);
            Ok(())
        }
        cmd => {
            let c = Client::new(cli.endpoint, cli.token, &cli.data_dir, cli.output)?;
            match cmd {
                Cmd::Pool { cmd: PoolCmd::List } => c.pools(None),
                Cmd::Pool {
                    cmd: PoolCmd::Show { name, .. },
                } => c.pools(Some(&name)),
                Cmd::Pool {
                    cmd: PoolCmd::Set { name, overcommit },
                } => c.pool_set(&name, &overcommit),
                Cmd::Tenant { cmd } => c.tenant(cmd),
                Cmd::Token { cmd } => c.token(cmd),
                Cmd::Volume { cmd } => c.volume(cmd),
                Cmd::Snapshot { cmd } => c.snapshot(cmd),
                Cmd::Audit { limit } => c.audit(limit),
                Cmd::Switch { cmd } => c.switch(cmd),
                Cmd::Serve { .. } | Cmd::Completion { .. } => unreachable!("handled above"),
            }
        }
    }
}

/// Takes the data dir's lock and opens (or, with `create_size`, first creates) the default pool.
/// The dir and everything in it are made private first (`datadir`).
fn open_data_dir(dir: &Path, create_size: Option<u64>) -> Result<(datadir::DirLock, Pool)> {
    let pool_rel = Path::new("pools").join("default");
    let pool_dir = dir.join(&pool_rel);
    if create_size.is_some() {
        datadir::create(dir, &[&pool_rel])?;
    } else if !pool_dir.exists() {
        bail!(
            "{} holds no Strata data (run `strata serve` first)",
            dir.display()
        );
    }
    let lock = datadir::lock(dir)?;
    let narrowed = datadir::enforce_modes(dir)?;
    if narrowed > 0 {
        tracing::warn!(entries = narrowed, dir = %dir.display(), "modes under the data dir narrowed");
    }
    let dev_path = pool_dir.join("dev0.img");
    let pool = if dev_path.exists() {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&dev_path)?);
        Pool::open(vec![dev]).with_context(|| format!("opening pool in {}", pool_dir.display()))?
    } else if let Some(size) = create_size {
        let dev = Arc::new(FileDevice::create_file(&dev_path, size)?);
        // Whatever mode the engine gave it under this umask, the image is the owner's only.
        datadir::set_mode(&dev_path, datadir::FILE_MODE)?;
        tracing::info!(path = %dev_path.display(), size, "creating default pool");
        Pool::create(vec![DeviceSpec {
            device: dev,
            class: DeviceClass::Ssd,
        }])?
    } else {
        bail!("{} has no default pool device", pool_dir.display());
    };
    Ok((lock, pool))
}

/// Writes the admin token readable by its owner only.
fn write_admin_token(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// The directory of the tenants' NBD sockets (`TENANT.sock`) under the data dir.
const TENANT_SOCKETS: &str = "sockets";

fn serve(
    dir: &Path,
    listen: &str,
    size: &str,
    nbd_listen: Option<&str>,
    api_limits: http::Limits,
) -> Result<()> {
    let size = parse_size(size).map_err(anyhow::Error::msg)?;
    let (_lock, pool) = open_data_dir(dir, Some(size))?;
    let store =
        strata_state::RedbStore::open(dir.join("state.redb")).context("opening the state store")?;
    let ctl = strata_control::Controller::open(Box::new(store), pool.clone())
        .map_err(|e| anyhow::anyhow!("recovering control-plane state: {e}"))?;
    if let Some(secret) = ctl
        .bootstrap_admin()
        .map_err(|e| anyhow::anyhow!("creating the admin token: {e}"))?
    {
        write_admin_token(&dir.join("admin.token"), &secret)?;
        tracing::info!(path = %dir.join("admin.token").display(), "admin token written");
    }
    let ctl = Arc::new(ctl);
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
    let nbd = Arc::new(strata_nbd::NbdServer::with_config(pool.clone(), cfg));
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
        let info = pool.info();
        tracing::info!(
            pool = %info.id,
            capacity = info.capacity,
            allocated = info.allocated,
            listen = %listener.local_addr()?,
            "strata serving"
        );
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
        };
        http::serve(
            listener,
            strata_control::api::router(ctl.clone()),
            api_limits,
            Arc::new(http::Counters::default()),
            shutdown,
        )
        .await?;
        anyhow::Ok(())
    })?;
    nbd.shutdown();
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
    println!("pool {}", i.id);
    println!(
        "capacity {}  allocated {}  free {}  provisioned {}",
        format_size(i.capacity),
        format_size(i.allocated),
        format_size(i.free),
        format_size(i.provisioned)
    );
    println!(
        "{:<4} {:<6} {:>10} {:>10}  PATH",
        "IDX", "CLASS", "CAPACITY", "USED"
    );
    for d in &i.devices {
        println!(
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
