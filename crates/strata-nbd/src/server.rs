//! The server: listeners, the connection registry, shutdown.
//!
//! Each listener has an accept thread; each connection a thread (see [`crate::conn`]). A
//! connection that misbehaves ends itself only: its errors never reach the accept loop or
//! another connection, and the number of connections is capped ([`ServerConfig`]).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use strata_block::Pool;
use thiserror::Error;

use crate::conn::{serve, ConnError, Stream};
use crate::export::Catalog;
use crate::transmit::Stats;

/// Limits and timeouts of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections at once; more are closed on accept.
    pub max_connections: usize,
    /// Time a client has for the whole handshake (a client that connects and says nothing
    /// holds a thread only this long).
    pub handshake_timeout: Duration,
    /// Time one socket write may block (a client that stops reading is disconnected then).
    pub write_timeout: Duration,
    /// How long a connection polls its socket before sleeping when it has no request to run
    /// (zero: never poll). Polling saves the wake-up on the client's next request; it costs
    /// at most this much CPU per idle period.
    pub poll_spin: Duration,
    /// Which volumes are exported (None: all of the pool's).
    pub filter: Option<crate::export::ExportFilter>,
    /// TLS for TCP connections (Unix sockets stay plain): with it, `NBD_OPT_STARTTLS` is
    /// accepted and the handshake runs with this configuration, whose client-certificate
    /// verifier decides who may connect ([`crate::tls_server_config`] builds one).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// On TCP, refuse every option before TLS (`NBD_REP_ERR_TLS_REQD`; `NBD_OPT_EXPORT_NAME`
    /// closes the connection). Needs `tls`: [`NbdServer::serve_tcp`] fails without it.
    pub tls_required: bool,
    /// Which exports each client may open, given its identity (the Subject Common Name of its
    /// TLS client certificate; `None` without TLS). Checked on every export lookup, after
    /// `filter`; a refused export looks like a missing one.
    pub authorize: Option<crate::export::Authorizer>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            poll_spin: Duration::from_micros(50),
            filter: None,
            tls: None,
            tls_required: false,
            authorize: None,
        }
    }
}

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

pub(crate) struct Shared {
    pub(crate) catalog: Catalog,
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutting_down: AtomicBool,
    conns: Mutex<HashMap<u64, Stream>>,
    live: Condvar,
    next_id: AtomicU64,
}

/// A listener as the server keeps it: a second handle to the listening socket (to wake the
/// accept thread at shutdown) and the Unix path to remove.
struct Listener {
    wake: std::os::fd::OwnedFd,
    path: Option<PathBuf>,
}

/// An NBD server exporting the volumes and snapshots of one pool.
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
    listeners: Mutex<Vec<(Listener, JoinHandle<()>)>>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("connections", &self.connections())
            .finish()
    }
}

impl NbdServer {
    /// A server with default limits. It listens nowhere until `serve_*` is called.
    pub fn new(pool: Pool) -> NbdServer {
        Self::with_config(pool, ServerConfig::default())
    }

    /// A server with the given limits.
    pub fn with_config(pool: Pool, config: ServerConfig) -> NbdServer {
        NbdServer {
            shared: Arc::new(Shared {
                catalog: Catalog::with_filter(pool, config.filter.clone())
                    .with_authorizer(config.authorize.clone()),
                config,
                stats: Arc::new(Stats::default()),
                shutting_down: AtomicBool::new(false),
                conns: Mutex::new(HashMap::new()),
                live: Condvar::new(),
                next_id: AtomicU64::new(1),
            }),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Data-path counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().len()
    }

    /// Listens on a Unix socket at `path` (a stale socket file left by a dead server is
    /// replaced; a live one is an error). Returns once listening.
    pub fn serve_unix(&self, path: impl AsRef<Path>) -> Result<(), ServeError> {
        let path = path.as_ref().to_path_buf();
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(ServeError::ShutDown);
        }
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            if md.file_type().is_socket() {
                if UnixStream::connect(&path).is_ok() {
                    return Err(ServeError::InUse(path));
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        let l = UnixListener::bind(&path).map_err(|source| ServeError::Bind {
            addr: path.display().to_string(),
            source,
        })?;
        let wake = l.try_clone().map_err(|source| ServeError::Bind {
            addr: path.display().to_string(),
            source,
        })?;
        let shared = self.shared.clone();
        let t = std::thread::Builder::new()
            .name("nbd-accept-unix".into())
            .spawn(move || {
                for s in l.incoming() {
                    if shared.shutting_down.load(Ordering::SeqCst) {
                        break;
                    }
                    match s {
                        Ok(s) => spawn_conn(&shared, Stream::Unix(s)),
                        // Out of file descriptors or similar: do not spin on it.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(ServeError::Thread)?;
        let l = Listener {
            wake: wake.into(),
            path: Some(path),
        };
        self.listeners.lock().push((l, t));
        Ok(())
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
        let t = std::thread::Builder::new()
            .name("nbd-accept-tcp".into())
            .spawn(move || {
                for s in l.incoming() {
                    if shared.shutting_down.load(Ordering::SeqCst) {
                        break;
                    }
                    match s {
                        Ok(s) => spawn_conn(&shared, Stream::Tcp(s)),
                        // Out of file descriptors or similar: do not spin on it.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(ServeError::Thread)?;
        let l = Listener {
            wake: wake.into(),
            path: None,
        };
        self.listeners.lock().push((l, t));
        Ok(local)
    }

    /// Stops listening, closes every connection and waits (up to 10 s) for their threads.
    /// Idempotent; also run on drop.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let listeners: Vec<_> = self.listeners.lock().drain(..).collect();
        for (l, t) in listeners {
            // shutdown(2) on a listening socket makes a blocked accept return (EINVAL on
            // Linux); the accept loop then sees the flag. No self-connect, so this works even
            // if the socket file is already gone.
            let _ = rustix::net::shutdown(&l.wake, rustix::net::Shutdown::Read);
            let _ = t.join();
            if let Some(p) = &l.path {
                let _ = std::fs::remove_file(p);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conns = self.shared.conns.lock();
        for s in conns.values() {
            s.shutdown();
        }
        while !conns.is_empty() {
            if self
                .shared
                .live
                .wait_until(&mut conns, deadline)
                .timed_out()
            {
                break;
            }
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.shutdown();
    }
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

fn spawn_conn(shared: &Arc<Shared>, stream: Stream) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.conns.lock();
        if conns.len() >= shared.config.max_connections
            || shared.shutting_down.load(Ordering::SeqCst)
        {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            stream.shutdown();
            return;
        }
        match stream.try_clone() {
            Ok(c) => {
                conns.insert(id, c);
            }
            Err(_) => return,
        }
    }
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let sh = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("nbd-conn".into())
        .spawn(move || {
            let r = serve(stream, &sh);
            if let Err(e) = &r {
                if matches!(e, ConnError::Proto(_) | ConnError::Handshake(_)) {
                    sh.stats.violations.fetch_add(1, Ordering::Relaxed);
                }
                if may_log() {
                    tracing::debug!(conn = id, error = %e, "nbd connection ended");
                }
            }
            let mut conns = sh.conns.lock();
            conns.remove(&id);
            sh.live.notify_all();
        });
    if spawned.is_err() {
        let mut conns = shared.conns.lock();
        if let Some(s) = conns.remove(&id) {
            s.shutdown();
        }
    }
}
