//! The server: listeners, admission, shutdown, and the public API the daemon calls.
//!
//! Each listener has an accept thread; each connection a thread (see [`crate::conn`]). A
//! connection that misbehaves ends itself only: its errors never reach the accept loop or
//! another connection. Admission is by budgets kept in the registry ([`crate::registry`]):
//! unauthenticated TCP, TCP sessions, per source address, per Unix listener
//! ([`ServerConfig`]); a connection over budget is closed on accept (counted in
//! [`Stats::refused`]).
//!
//! Unix socket files are created with their mode (and owner) set before anyone can connect:
//! bound in a fresh directory of mode 0700 beside the target path, given their mode and owner
//! there, then renamed into place. So the umask never decides who may connect, and there is
//! no moment where the socket is reachable with the wrong permissions.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_block::Pool;
use thiserror::Error;

use crate::backend::ExportSource;
use crate::config::{ServerConfig, UnixListenerOptions};
use crate::conn::{serve, Accepted, ConnError};
use crate::context::Shared;
use crate::export::Catalog;
use crate::pool_source::PoolSource;
use crate::registry::{Registry, SessionInfo, TcpLimits};
use crate::socket::{Sock, Stream};
use crate::transmit::Stats;

/// Errors starting a listener.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address or path.
        addr: String,
        /// Cause.
        source: io::Error,
    },
    /// Something already listens on this Unix socket path.
    #[error("{0} is in use by a running server")]
    InUse(PathBuf),
    /// The path exists and is not a socket: it is never replaced.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// The server was shut down.
    #[error("server is shut down")]
    ShutDown,
    /// Spawning the accept thread failed.
    #[error("cannot start the accept thread: {0}")]
    Thread(io::Error),
    /// `tls_required` is set but `tls` is not: no client could ever connect.
    #[error("tls_required is set without a TLS configuration")]
    TlsNotConfigured,
}

/// A listener as the server keeps it: a second handle to the listening socket (to wake the
/// accept thread), the Unix path to remove, the accept thread.
struct Listener {
    id: u64,
    stop: Stop,
    wake: std::os::fd::OwnedFd,
    path: Option<PathBuf>,
    thread: JoinHandle<()>,
}

impl Listener {
    /// Stops accepting and waits for the accept thread; removes the socket file.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket makes a blocked accept return (EINVAL on Linux);
        // the accept loop then sees the flag. No self-connect, so this works even if the
        // socket file is already gone.
        let _ = rustix::net::shutdown(&self.wake, rustix::net::Shutdown::Read);
        let _ = self.thread.join();
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An NBD server exporting the volumes and snapshots of one pool ([`NbdServer::new`]), or of
/// any [`ExportSource`] ([`NbdServer::with_source`]).
///
/// ```no_run
/// # use strata_nbd::NbdServer;
/// # fn f(pool: strata_block::Pool) -> Result<(), Box<dyn std::error::Error>> {
/// let server = NbdServer::new(pool);
/// server.serve_unix("/run/strata/nbd.sock")?;
/// let addr = server.serve_tcp("127.0.0.1:10809")?;
/// // ... clients open nbd+unix:///VOLUME?socket=/run/strata/nbd.sock or nbd://addr/VOLUME
/// server.shutdown();
/// # Ok(()) }
/// ```
pub struct NbdServer {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<Listener>>,
    next_listener: AtomicU64,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("connections", &self.connections())
            .finish()
    }
}

/// A flag that stops an accept loop without stopping the server.
type Stop = Arc<AtomicBool>;

impl NbdServer {
    /// A server with default limits. It listens nowhere until `serve_*` is called.
    pub fn new(pool: Pool) -> NbdServer {
        Self::with_config(pool, ServerConfig::default())
    }

    /// A server of `pool`'s volumes ([`PoolSource`]) with the given limits.
    pub fn with_config(pool: Pool, config: ServerConfig) -> NbdServer {
        Self::with_source(Arc::new(PoolSource::new(pool)), config)
    }

    /// A server of the exports `source` resolves, with the given limits; the configuration's
    /// filter, authorizer and snapshot names apply on top of the source's names.
    pub fn with_source(source: Arc<dyn ExportSource>, config: ServerConfig) -> NbdServer {
        NbdServer {
            shared: Arc::new(Shared {
                catalog: Catalog::from_source(source)
                    .filtered(config.filter.clone())
                    .with_authorizer(config.authorize.clone())
                    .with_snapshot_names(config.snapshot_names.clone()),
                config,
                stats: Arc::new(Stats::default()),
                shutting_down: AtomicBool::new(false),
                registry: Registry::default(),
            }),
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(1),
        }
    }

    /// Data-path counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections open now (every listener, every phase).
    pub fn connections(&self) -> usize {
        self.shared.registry.len()
    }

    /// Listens on a Unix socket at `path` with [`UnixListenerOptions::default`] (no
    /// identity, mode 0600, the process's owner, [`ServerConfig::max_unix_connections`]).
    /// A stale socket file left by a dead server is replaced; a live one is an error.
    /// Returns once listening.
    pub fn serve_unix(&self, path: impl AsRef<Path>) -> Result<(), ServeError> {
        self.serve_unix_with(
            path,
            UnixListenerOptions {
                max_connections: self.shared.config.max_unix_connections,
                ..UnixListenerOptions::default()
            },
        )
    }

    /// Listens on a Unix socket at `path` whose connections all carry `opts.identity` for
    /// the [`crate::Authorizer`] (a tenant's own socket), with the file's mode and owner set
    /// whatever the umask, and its own connection capacity. Returns once listening.
    ///
    /// ```no_run
    /// # fn f(server: &strata_nbd::NbdServer) -> Result<(), strata_nbd::ServeError> {
    /// server.serve_unix_with("/run/strata/tenants/acme.sock", strata_nbd::UnixListenerOptions {
    ///     identity: Some("acme".into()),
    ///     mode: 0o600,
    ///     owner: Some((1001, 1001)),
    ///     ..Default::default()
    /// })?;
    /// // later, when the tenant goes: stop listening and end its sessions
    /// server.stop_unix("/run/strata/tenants/acme.sock");
    /// # Ok(()) }
    /// ```
    pub fn serve_unix_with(
        &self,
        path: impl AsRef<Path>,
        opts: UnixListenerOptions,
    ) -> Result<(), ServeError> {
        let path = path.as_ref().to_path_buf();
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(ServeError::ShutDown);
        }
        let bind_err = |source: io::Error| ServeError::Bind {
            addr: path.display().to_string(),
            source,
        };
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if !md.file_type().is_socket() {
                return Err(ServeError::NotASocket(path));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(ServeError::InUse(path));
            }
        }
        let l = bind_private(&path, &opts).map_err(bind_err)?;
        let wake = l.try_clone().map_err(bind_err)?;
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let stop = Stop::default();
        let stop2 = stop.clone();
        let shared = self.shared.clone();
        let cap = opts.max_connections;
        let accepted = Accepted {
            id: 0,
            identity: opts.identity,
            listener: Some(path.clone()),
        };
        let t = std::thread::Builder::new()
            .name("nbd-accept-unix".into())
            .spawn(move || {
                for s in l.incoming() {
                    if shared.shutting_down.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match s {
                        Ok(s) => {
                            let s = Stream::new(Sock::Unix(s), shared.config.write_timeout);
                            let conn = shared.registry.admit_unix(&s, id, cap);
                            spawn_conn(&shared, s, conn, &accepted);
                        }
                        // Out of file descriptors or similar: do not spin on it.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(ServeError::Thread)?;
        self.listeners.lock().push(Listener {
            id,
            stop: stop2,
            wake: wake.into(),
            path: Some(path),
            thread: t,
        });
        Ok(())
    }

    /// Stops the Unix listener at `path` (the socket file is removed) and closes the
    /// connections it accepted. `false` if no listener of this server is at `path`.
    pub fn stop_unix(&self, path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        let l = {
            let mut ls = self.listeners.lock();
            let Some(i) = ls.iter().position(|l| l.path.as_deref() == Some(path)) else {
                return false;
            };
            ls.remove(i)
        };
        let id = l.id;
        l.stop();
        self.shared.registry.close_listener(id);
        true
    }

    /// Listens on TCP; returns the bound address (useful with port 0). With
    /// [`ServerConfig::tls`], clients may (with `tls_required`, must) upgrade to TLS.
    /// `tls_required` without `tls` is [`ServeError::TlsNotConfigured`].
    pub fn serve_tcp(&self, addr: impl ToSocketAddrs) -> Result<SocketAddr, ServeError> {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(ServeError::ShutDown);
        }
        if self.shared.config.tls_required && self.shared.config.tls.is_none() {
            return Err(ServeError::TlsNotConfigured);
        }
        let l = TcpListener::bind(addr).map_err(|source| ServeError::Bind {
            addr: "tcp".into(),
            source,
        })?;
        let local = l.local_addr().map_err(|source| ServeError::Bind {
            addr: "tcp".into(),
            source,
        })?;
        let wake = l.try_clone().map_err(|source| ServeError::Bind {
            addr: local.to_string(),
            source,
        })?;
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let limits = TcpLimits {
            unauthenticated: cfg.max_unauthenticated,
            per_source: cfg.max_per_source,
        };
        let accepted = Accepted {
            id: 0,
            identity: None,
            listener: None,
        };
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let stop = Stop::default();
        let stop2 = stop.clone();
        let t = std::thread::Builder::new()
            .name("nbd-accept-tcp".into())
            .spawn(move || {
                for s in l.incoming() {
                    if shared.shutting_down.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match s {
                        Ok(s) => {
                            let ip = s.peer_addr().map(|a| a.ip());
                            let s = Stream::new(Sock::Tcp(s), shared.config.write_timeout);
                            let conn = ip
                                .ok()
                                .and_then(|ip| shared.registry.admit_tcp(&s, ip, limits));
                            spawn_conn(&shared, s, conn, &accepted);
                        }
                        // Out of file descriptors or similar: do not spin on it.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(ServeError::Thread)?;
        self.listeners.lock().push(Listener {
            id,
            stop: stop2,
            wake: wake.into(),
            path: None,
            thread: t,
        });
        Ok(local)
    }

    /// Closes every session in transmission that `pick` selects (a detached volume, a
    /// revoked credential): their sockets are shut down at once, so they end within
    /// milliseconds; replies in flight may be lost. Returns how many were closed.
    /// Connections still in the handshake are not sessions yet: refuse their credential
    /// through [`ServerConfig::admit`] and [`crate::Authorizer`].
    ///
    /// ```no_run
    /// # fn f(server: &strata_nbd::NbdServer) {
    /// let n = server.close_sessions(|s| s.volume == "detached-volume");
    /// let m = server.close_sessions(|s| s.cert_serial.as_deref() == Some("1a2b"));
    /// # let _ = (n, m); }
    /// ```
    pub fn close_sessions(&self, mut pick: impl FnMut(&SessionInfo) -> bool) -> usize {
        self.shared.registry.close_sessions(&mut pick)
    }

    /// Stops listening, closes every connection and waits (up to 10 s) for their threads.
    /// Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let listeners: Vec<_> = self.listeners.lock().drain(..).collect();
        for l in listeners {
            l.stop();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        self.shared.registry.close_all(deadline);
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds a Unix socket at `path` that nobody but us can reach until it has `opts.mode` and
/// `opts.owner`: bound in a new 0700 directory beside `path`, chmod/chown there, renamed into
/// place (replacing a stale socket atomically).
fn bind_private(path: &Path, opts: &UnixListenerOptions) -> io::Result<UnixListener> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = parent.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    // The umask can only take bits away from 0700.
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("s");
    let r = (|| {
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opts.mode & 0o7777))?;
        if let Some((uid, gid)) = opts.owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    r
}

/// Rate limit for connection-level log lines a client can trigger: at most this many per
/// second, server-wide.
const LOGS_PER_SEC: u64 = 10;
static LOG_WINDOW: AtomicU64 = AtomicU64::new(0);
static LOG_COUNT: AtomicU64 = AtomicU64::new(0);

fn may_log() -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LOG_WINDOW.swap(now, Ordering::Relaxed) != now {
        LOG_COUNT.store(0, Ordering::Relaxed);
    }
    LOG_COUNT.fetch_add(1, Ordering::Relaxed) < LOGS_PER_SEC
}

/// Starts the thread of an admitted connection (`id`), or closes one that was refused
/// (`None`).
fn spawn_conn(shared: &Arc<Shared>, stream: Stream, id: Option<u64>, acc: &Accepted) {
    let Some(id) = id.filter(|_| !shared.shutting_down.load(Ordering::SeqCst)) else {
        if let Some(id) = id {
            shared.registry.remove(id);
        }
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        stream.shutdown();
        return;
    };
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let sh = shared.clone();
    let acc = Accepted { id, ..acc.clone() };
    let spawned = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || {
            let r = serve(stream, &sh, &acc);
            if let Err(e) = &r {
                if matches!(e, ConnError::Proto(_) | ConnError::Handshake(_)) {
                    sh.stats.violations.fetch_add(1, Ordering::Relaxed);
                }
                if e.is_timeout() {
                    sh.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                if may_log() {
                    tracing::debug!(conn = id, error = %e, "nbd connection ended");
                }
            }
            sh.registry.remove(id);
        });
    if spawned.is_err() {
        shared.registry.remove(id);
    }
}
