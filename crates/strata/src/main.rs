//! `strata`: the daemon (`strata serve`) and the command-line interface.
//!
//! Today the daemon owns the data dir and its default pool; the REST API, tenants and the
//! full CLI contract of PRODUCT.md arrive with the control plane. `strata pool show` reads a
//! pool's utilization directly from the data dir while no daemon holds it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use strata_block::{BlockDevice, DeviceSpec, FileDevice, Pool};
use strata_types::{format_size, parse_size, DeviceClass};

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Storage and network virtualization for AI data centers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs the daemon: creates the data dir and a default file-backed pool on first start.
    Serve {
        /// Where Strata keeps its state and default pool.
        #[arg(long, default_value = "./strata-data", env = "STRATA_DATA_DIR")]
        data_dir: PathBuf,
        /// Address the API will listen on (reserved: the API comes with the control plane).
        #[arg(long, default_value = "127.0.0.1:7480")]
        listen: String,
        /// Size of the default pool's sparse device file, created on first start.
        #[arg(long, default_value = "64G")]
        default_pool_size: String,
    },
    /// Pool commands.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Shows the default pool's devices and utilization (the daemon must not be running).
    Show {
        /// The data dir.
        #[arg(long, default_value = "./strata-data", env = "STRATA_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            data_dir,
            listen,
            default_pool_size,
        } => serve(&data_dir, &listen, &default_pool_size),
        Cmd::Pool {
            cmd: PoolCmd::Show { data_dir },
        } => {
            let (_lock, pool) = open_data_dir(&data_dir, None)?;
            print_pool(&pool);
            Ok(())
        }
    }
}

/// Takes the data dir's lock and opens (or, with `create_size`, first creates) the default pool.
fn open_data_dir(dir: &Path, create_size: Option<u64>) -> Result<(File, Pool)> {
    let pool_dir = dir.join("pools").join("default");
    if create_size.is_some() {
        fs::create_dir_all(&pool_dir)
            .with_context(|| format!("creating {}", pool_dir.display()))?;
    } else if !pool_dir.exists() {
        bail!(
            "{} holds no Strata data (run `strata serve` first)",
            dir.display()
        );
    }
    let lock = File::create(dir.join("lock"))?;
    if lock.try_lock().is_err() {
        bail!("{} is in use by another Strata process", dir.display());
    }
    let dev_path = pool_dir.join("dev0.img");
    let pool = if dev_path.exists() {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&dev_path)?);
        Pool::open(vec![dev]).with_context(|| format!("opening pool in {}", pool_dir.display()))?
    } else if let Some(size) = create_size {
        let dev = Arc::new(FileDevice::create_file(&dev_path, size)?);
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

fn serve(dir: &Path, listen: &str, size: &str) -> Result<()> {
    let size = parse_size(size).map_err(anyhow::Error::msg)?;
    let (_lock, pool) = open_data_dir(dir, Some(size))?;
    let info = pool.info();
    tracing::info!(
        pool = %info.id,
        capacity = info.capacity,
        allocated = info.allocated,
        volumes = pool.volumes().len(),
        %listen,
        "strata serving (storage engine only: the API arrives with the control plane)"
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    pool.flush().context("flushing the pool")?;
    Ok(())
}

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
