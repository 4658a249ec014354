//! Where the CLI finds the daemon: the endpoint and token from flags and environment, the
//! user's config file, or the local data dir, in that order (`resolve`).
//!
//! The config file is YAML, `endpoint` and `token`:
//! ```yaml
//! endpoint: http://127.0.0.1:7480
//! token: st_...
//! ```
//! It lives at `$STRATA_CONFIG` if set, else `$XDG_CONFIG_HOME/strata/config.yaml`, else
//! `$HOME/.config/strata/config.yaml` (kubectl's habit of one file under the user's home). It
//! is written by `strata login` (always) and by the first start of `strata serve` (only when
//! no config file exists yet, so a start never replaces what a user saved).
//!
//! # Invariants
//! - The file is mode 0600 and its directory, when we create it, 0700: it holds a token. It is
//!   written whole to a temporary file in the same directory and renamed over, so a reader
//!   never sees half a file.
//! - The config's token is sent only to the config's endpoint: a token saved for one daemon
//!   never goes to an endpoint named on the command line that is another one.
//! - Tests never touch the real home: every path comes from the environment above.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where `strata serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

/// The default data dir of the local daemon.
pub const DEFAULT_DATA_DIR: &str = "./strata-data";

/// The config file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The API's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The token sent to `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The config file's path (see the module doc), or `None` with no home to put it in.
pub fn path() -> Option<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("STRATA_CONFIG") {
        return Some(p);
    }
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(base.join("strata").join("config.yaml"))
}

/// Reads the config file; a missing file is the empty config.
pub fn load(path: &Path) -> Result<Config> {
    match fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(Config::default()),
        Ok(t) => serde_yaml::from_str(&t)
            .with_context(|| format!("reading the CLI config {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("reading the CLI config {}", path.display())),
    }
}

/// Writes the config file, private to its owner (see the invariants).
pub fn save(path: &Path, c: &Config) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.yaml")
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // Whatever the umask or an older file's mode, the token is the owner's only.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(serde_yaml::to_string(c)?.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// An endpoint as the user typed it, as a base URL: `host:port` and `:port` mean HTTP,
/// `http://` and `https://` URLs are kept; a trailing `/` is dropped.
pub fn normalize_endpoint(e: &str) -> Result<String> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() {
        bail!("invalid_argument: --endpoint is empty (e.g. 127.0.0.1:7480 or http://host:7480)");
    }
    let url = match e.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => e.to_string(),
        Some((scheme, _)) => bail!(
            "invalid_argument: --endpoint {e:?}: scheme {scheme:?} is not http or https \
             (e.g. 127.0.0.1:7480 or http://host:7480)"
        ),
        None if e.starts_with(':') => format!("http://127.0.0.1{e}"),
        None => format!("http://{e}"),
    };
    Ok(url)
}

/// Where the token came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `STRATA_TOKEN`.
    Flag,
    /// A data dir's `admin.token`.
    DataDir(PathBuf),
    /// The config file.
    Config(PathBuf),
    /// No token found.
    None,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Flag => write!(f, "--token/STRATA_TOKEN"),
            TokenSource::DataDir(p) => write!(f, "{}", p.display()),
            TokenSource::Config(p) => write!(f, "the CLI config {}", p.display()),
            TokenSource::None => write!(f, "none found"),
        }
    }
}

/// The daemon to talk to and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, no trailing `/`.
    pub base: String,
    /// Bearer token (empty: none).
    pub token: String,
    /// Where the token came from.
    pub source: TokenSource,
}

/// The file in a data dir that records where its daemon's API listens.
pub const ENDPOINT_FILE: &str = "endpoint";

/// Resolves endpoint and token.
///
/// - endpoint: `--endpoint`/`STRATA_ENDPOINT`; else the one the local data dir records
///   (`--data-dir`, default `./strata-data`: `DIR/endpoint`, written by `strata serve` at every
///   start); else the config's; else [`DEFAULT_LISTEN`];
/// - token: `--token`/`STRATA_TOKEN`; else the `admin.token` of a data dir named with
///   `--data-dir`/`STRATA_DATA_DIR`, or of the local data dir whose endpoint is used; else the
///   config's token when the endpoint is the config's; else `./strata-data/admin.token` when
///   readable (the local daemon's default).
pub fn resolve(
    endpoint: Option<&str>,
    token: Option<String>,
    data_dir: Option<&Path>,
) -> Result<Target> {
    let cfg_path = path();
    let cfg = match &cfg_path {
        Some(p) => load(p)?,
        None => Config::default(),
    };
    let cfg_endpoint = cfg
        .endpoint
        .as_deref()
        .map(normalize_endpoint)
        .transpose()
        .map_err(|e| anyhow!("{e:#} (in the CLI config)"))?;
    // A local data dir (named, or ./strata-data) that records its daemon's endpoint wins over
    // the saved config: that is the daemon beside the user.
    let local_dir = data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR));
    let local_endpoint = fs::read_to_string(local_dir.join(ENDPOINT_FILE))
        .ok()
        .and_then(|e| normalize_endpoint(e.trim()).ok());
    let base = match (endpoint, &local_endpoint) {
        (Some(e), _) => normalize_endpoint(e)?,
        (None, Some(l)) => l.clone(),
        (None, None) => cfg_endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}")),
    };
    let read_admin = |dir: &Path| {
        let p = dir.join("admin.token");
        fs::read_to_string(&p)
            .ok()
            .map(|t| (t.trim().to_string(), TokenSource::DataDir(p)))
    };
    let found = if let Some(t) = token.filter(|t| !t.is_empty()) {
        Some((t, TokenSource::Flag))
    } else if let Some(d) = data_dir {
        read_admin(d)
    } else if local_endpoint.as_deref() == Some(base.as_str()) {
        read_admin(local_dir)
    } else {
        None
    };
    let found = found
        .or_else(|| {
            let same = cfg_endpoint.as_deref() == Some(base.as_str());
            match (same, &cfg.token, &cfg_path) {
                (true, Some(t), Some(p)) => Some((t.clone(), TokenSource::Config(p.clone()))),
                _ => None,
            }
        })
        .or_else(|| read_admin(Path::new(DEFAULT_DATA_DIR)));
    let (token, source) = found.unwrap_or((String::new(), TokenSource::None));
    Ok(Target {
        base,
        token,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_a_bare_address() {
        let n = |e| normalize_endpoint(e).unwrap();
        assert_eq!(n("127.0.0.1:7600"), "http://127.0.0.1:7600");
        assert_eq!(n(":7600"), "http://127.0.0.1:7600");
        assert_eq!(n("http://h:1/"), "http://h:1");
        assert_eq!(n("https://h"), "https://h");
        assert_eq!(n("[::1]:7480"), "http://[::1]:7480");
        assert!(normalize_endpoint("ftp://h").is_err());
        assert!(normalize_endpoint("").is_err());
    }

    #[test]
    fn the_config_is_private_and_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/config.yaml");
        let c = Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            token: Some("st_x".into()),
        };
        save(&p, &c).unwrap();
        assert_eq!(load(&p).unwrap(), c);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(load(&t.path().join("none")).unwrap(), Config::default());
    }
}
