//! Opening the data dir at start, and the first start that creates it.
//!
//! # Invariants
//! - A first start validates its arguments before it creates anything (`--default-pool-size`
//!   must hold a pool: at least the engine's smallest device).
//! - A first start that fails after creating something removes what it created (the dir
//!   itself when it did not exist before), so a later start begins afresh and never finds a
//!   half-made data dir (a device file without a superblock, a store without an admin token).
//!   "First start" means the dir holds neither a pool device nor a state store.
//! - The first start makes the admin token (`DIR/admin.token`, 0600) and a tenant named
//!   [`strata_control::controller::DEFAULT_TENANT`], where an admin's volume commands act without
//!   `--tenant`; and it saves the endpoint and admin token in the CLI config when the user has
//!   none yet (`config.rs`).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use strata_block::{BlockDevice, DeviceSpec, FileDevice, Pool};
use strata_types::{format_size, parse_size, DeviceClass};

use crate::{config, datadir};

/// What a start opened: the dir's lock, the pool, the controller, and on a first start the
/// admin token's secret.
pub type Opened = (
    datadir::DirLock,
    Pool,
    strata_control::Controller,
    Option<String>,
);

/// Opens the data dir for `strata serve`, creating it on a first start (see the invariants).
/// With `store` (`etcd://...`), control-plane state is in that etcd cluster, which must answer
/// before anything is created.
pub fn init(dir: &Path, size: &str, store: Option<&str>, node: &str) -> Result<Opened> {
    let size = parse_size(size)
        .map_err(|e| anyhow!("invalid_argument: --default-pool-size {size:?}: {e}"))?;
    let etcd = match store {
        None => None,
        Some(url) => {
            let cfg = strata_state::EtcdConfig::from_url(url)
                .map_err(|e| anyhow!("invalid_argument: --store: {e}"))?;
            let s = strata_state::EtcdStore::connect(cfg)
                .with_context(|| format!("connecting to the etcd state store at {url}"))?;
            tracing::info!(store = url, root = s.root(), "state in etcd");
            Some(s)
        }
    };
    let existed = dir.exists();
    let fresh = is_fresh(dir);
    if fresh {
        let min = strata_block::format::MIN_DEVICE_SIZE;
        if size < min {
            bail!(
                "invalid_argument: --default-pool-size {} is too small for a pool: at least {} \
                 (nothing was created)",
                format_size(size),
                format_size(min)
            );
        }
    }
    let lock = match prepare(dir, true) {
        Ok(l) => l,
        Err(e) => {
            if !existed {
                // Nobody else can hold a dir that did not exist: what we made goes.
                let _ = fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    match node_name(dir, node).and_then(|()| open_all(dir, size, fresh, etcd, node)) {
        Ok((pool, ctl, secret)) => Ok((lock, pool, ctl, secret)),
        Err(e) if fresh => {
            undo_first_start(dir, existed);
            Err(e.context(format!(
                "the first start failed; {} is left as it was before",
                dir.display()
            )))
        }
        Err(e) => Err(e),
    }
}

/// No pool device and no state store: nothing a start made is in the dir.
fn is_fresh(dir: &Path) -> bool {
    !dir.join(POOL_DEVICE).exists() && !dir.join(STATE).exists()
}

const POOL_DIR: &str = "pools/default";
const POOL_DEVICE: &str = "pools/default/dev0.img";
const STATE: &str = "state.redb";
const ADMIN_TOKEN: &str = "admin.token";
/// The name of the node the data dir belongs to.
const NODE_FILE: &str = "node";

/// Removes what a failed first start made (its lock is still held: nobody else is in it).
fn undo_first_start(dir: &Path, existed: bool) {
    if !existed {
        let _ = fs::remove_dir_all(dir);
        return;
    }
    let _ = fs::remove_dir_all(dir.join("pools"));
    for f in [STATE, ADMIN_TOKEN, "admin.tmp", NODE_FILE] {
        let _ = fs::remove_file(dir.join(f));
    }
}

/// The node name a data dir was given at its first start, if any.
pub fn stored_node(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(NODE_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Checks that the data dir is node `node`'s, or makes it so (`DIR/node`): a data dir's
/// devices are one node's, and its pool records are found under that node's name only, so a
/// start under another name (a changed hostname) is refused rather than finding no pools.
fn node_name(dir: &Path, node: &str) -> Result<()> {
    let path = dir.join(NODE_FILE);
    match fs::read_to_string(&path) {
        Ok(had) if had.trim() == node => Ok(()),
        Ok(had) => bail!(
            "invalid_argument: --node {node:?}: {} belongs to node {:?} (start it with --node {})",
            dir.display(),
            had.trim(),
            had.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_private(&path, &format!("{node}\n"))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn open_all(
    dir: &Path,
    size: u64,
    fresh: bool,
    etcd: Option<strata_state::EtcdStore>,
    node: &str,
) -> Result<(Pool, strata_control::Controller, Option<String>)> {
    let pool = open_pool(dir, Some(size)).map_err(|e| {
        if !fresh && !dir.join(STATE).exists() {
            e.context(format!(
                "{} looks half-made by a failed first start (a pool device but no state \
                 store): remove it and start again",
                dir.display()
            ))
        } else {
            e
        }
    })?;
    let store: Box<dyn strata_state::Store> = match etcd {
        Some(s) => Box::new(s),
        None => Box::new(
            strata_state::RedbStore::open(dir.join(STATE)).context("opening the state store")?,
        ),
    };
    let ctl = strata_control::Controller::open_node(store, pool.clone(), node)
        .map_err(|e| anyhow!("recovering control-plane state: {e}"))?;
    let secret = ctl
        .bootstrap_admin()
        .map_err(|e| anyhow!("creating the admin token: {e}"))?;
    if let Some(secret) = &secret {
        let admin = ctl
            .authenticate(secret)
            .map_err(|e| anyhow!("the new admin token: {e}"))?;
        ctl.create_tenant(
            &admin,
            strata_control::controller::DEFAULT_TENANT,
            strata_control::Quota::default(),
        )
        .map_err(|e| anyhow!("creating the default tenant: {e}"))?;
        write_admin_token(&dir.join(ADMIN_TOKEN), secret)?;
        tracing::info!(path = %dir.join(ADMIN_TOKEN).display(), "admin token written");
    }
    Ok((pool, ctl, secret))
}

/// Saves the endpoint and the admin token in the CLI config, unless the user has one.
pub fn save_cli_config(addr: &SocketAddr, secret: &str) {
    let Some(path) = config::path() else {
        return;
    };
    let endpoint = if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    if path.exists() {
        tracing::info!(
            config = %path.display(),
            "CLI config exists, left as it is; `strata login --endpoint {endpoint} --token \
             $(cat DATA_DIR/admin.token)` points it at this daemon"
        );
        return;
    }
    let c = config::Config {
        endpoint: Some(endpoint),
        token: Some(secret.to_string()),
    };
    match config::save(&path, &c) {
        Ok(()) => {
            tracing::info!(config = %path.display(), "CLI config written (endpoint and admin token)")
        }
        Err(e) => {
            tracing::warn!(config = %path.display(), error = %format!("{e:#}"), "CLI config not written")
        }
    }
}

/// Takes the data dir's lock and opens the default pool (the daemon must not be running):
/// for offline reads.
pub fn open_data_dir(dir: &Path, create_size: Option<u64>) -> Result<(datadir::DirLock, Pool)> {
    if create_size.is_none() && !dir.join(POOL_DIR).exists() {
        bail!(
            "{} holds no Strata data (run `strata serve` first)",
            dir.display()
        );
    }
    let lock = prepare(dir, create_size.is_some())?;
    Ok((lock, open_pool(dir, create_size)?))
}

/// Creates the dir (when asked), takes its lock and makes everything in it private.
fn prepare(dir: &Path, create: bool) -> Result<datadir::DirLock> {
    if create {
        datadir::create(dir, &[Path::new(POOL_DIR)])?;
    }
    let lock = datadir::lock(dir)?;
    let narrowed = datadir::enforce_modes(dir)?;
    if narrowed > 0 {
        tracing::warn!(entries = narrowed, dir = %dir.display(), "modes under the data dir narrowed");
    }
    Ok(lock)
}

/// Opens (or, with `create_size`, first creates) the default pool.
fn open_pool(dir: &Path, create_size: Option<u64>) -> Result<Pool> {
    let pool_dir = dir.join(POOL_DIR);
    let dev_path = dir.join(POOL_DEVICE);
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
    Ok(pool)
}

/// Writes the admin token readable by its owner only.
fn write_admin_token(path: &Path, secret: &str) -> Result<()> {
    write_private(path, secret)
}

/// Records where this daemon's API listens in `DIR/endpoint` (0600), at every start: the CLI
/// run beside a data dir finds its daemon there before any saved config, so a config left by
/// another daemon (a test's, a temporary one's) never sends it elsewhere.
pub fn record_endpoint(dir: &Path, addr: &std::net::SocketAddr) -> Result<()> {
    write_private(
        &dir.join(crate::config::ENDPOINT_FILE),
        &format!("http://{addr}\n"),
    )
}

/// Writes `text` to `path` through a temporary file, mode 0600 whatever the umask.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// The master key `strata serve` was given: `--master-key-file` (which must lie outside the
/// data dir: a key beside the data it protects protects nothing), else `STRATA_MASTER_KEY`
/// (64 hex digits), else none.
pub fn master_key(
    dir: &Path,
    file: Option<&Path>,
) -> Result<Option<Arc<dyn strata_block::KeyWrapper>>> {
    if let Some(f) = file {
        let k = strata_block::KeyFile::open_outside(f, dir).with_context(|| {
            format!(
                "master key {}: `strata master-key create PATH` makes one (keep it outside \
                 the data dir)",
                f.display()
            )
        })?;
        return Ok(Some(Arc::new(k)));
    }
    match std::env::var("STRATA_MASTER_KEY") {
        Ok(_) => Ok(Some(Arc::new(
            strata_block::EnvKey::from_var("STRATA_MASTER_KEY")
                .context("STRATA_MASTER_KEY: 64 hex digits (32 bytes)")?,
        ))),
        Err(_) => Ok(None),
    }
}
