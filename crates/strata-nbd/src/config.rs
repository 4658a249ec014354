//! What the daemon decides about a server: limits, timeouts, TLS, who may open what, and the
//! options of each Unix listener. Plain data and callbacks; nothing here does I/O.
//!
//! The connection budgets are separate so that no class of client can starve another:
//! TCP connections that have not entered transmission (before TLS, during option haggling)
//! have their own small budget ([`ServerConfig::max_unauthenticated`]), sessions in
//! transmission theirs ([`ServerConfig::max_connections`]), one source address at most
//! [`ServerConfig::max_per_source`] of all its TCP connections, and every Unix listener its
//! own capacity ([`UnixListenerOptions::max_connections`]) whatever TCP does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::export::{Authorizer, ExportFilter, SnapshotNames};

/// Limits and timeouts of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most TCP connections in transmission at once (they have passed TLS, when required,
    /// and `NBD_OPT_GO`). A client whose `GO` finds them all taken is closed instead of
    /// answered. Unix listeners do not count here.
    pub max_connections: usize,
    /// Most TCP connections at once that have not entered transmission yet (handshake, TLS,
    /// options); more are closed on accept. Small: these clients are unauthenticated.
    pub max_unauthenticated: usize,
    /// Most TCP connections (any phase) from one source IP address; more are closed on
    /// accept.
    pub max_per_source: usize,
    /// Default capacity of a Unix listener started with [`crate::NbdServer::serve_unix`].
    pub max_unix_connections: usize,
    /// Time a client has for the whole handshake, from accept to transmission: option
    /// haggling, the TLS handshake and the options inside TLS together.
    pub handshake_timeout: Duration,
    /// Time a peer may leave a reply unread: a connection whose socket has accepted no
    /// byte for this long (counted from when its buffer filled) is closed.
    pub write_timeout: Duration,
    /// A session in transmission that sends no request for this long, with no reply of its
    /// own pending, is closed (zero: never).
    pub idle_timeout: Duration,
    /// How long a connection polls its socket before sleeping when it has no request to run
    /// (zero: never poll). Polling saves the wake-up on the client's next request; it costs
    /// at most this much CPU per idle period.
    pub poll_spin: Duration,
    /// Which volumes are exported (None: all of the pool's).
    pub filter: Option<ExportFilter>,
    /// TLS for TCP connections (Unix sockets stay plain): with it, `NBD_OPT_STARTTLS` is
    /// accepted and the handshake runs with this configuration, whose client-certificate
    /// verifier decides who may connect ([`crate::tls_server_config`] builds one).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// On TCP, refuse every option before TLS (`NBD_REP_ERR_TLS_REQD`; `NBD_OPT_EXPORT_NAME`
    /// closes the connection). Needs `tls`: [`crate::NbdServer::serve_tcp`] fails without it.
    pub tls_required: bool,
    /// Which exports each client may open, given its identity: the Subject Common Name of
    /// its TLS client certificate, else the identity of the Unix listener it came through
    /// ([`UnixListenerOptions::identity`]), else `None` (the admin socket, and a plain TCP
    /// client when `tls_required` is off). Checked on every export lookup, `NBD_OPT_LIST`
    /// included, after `filter`; a refused export looks like a missing one.
    pub authorize: Option<Authorizer>,
    /// Called once the TLS handshake has completed (the certificate chain is verified and
    /// unexpired); `false` closes the connection before any option is read. For revocation:
    /// refuse the serials that were revoked.
    pub admit: Option<Admit>,
    /// Resolves the snapshot part of `VOLUME@SNAPSHOT` and of `strata:changed-since:SNAPSHOT`
    /// to the engine's snapshot name, so clients may use the names their users gave
    /// snapshots; a name it does not resolve is taken as the engine's name itself.
    pub snapshot_names: Option<SnapshotNames>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            max_unauthenticated: 32,
            max_per_source: 16,
            max_unix_connections: 64,
            handshake_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            poll_spin: Duration::from_micros(50),
            filter: None,
            tls: None,
            tls_required: false,
            authorize: None,
            admit: None,
            snapshot_names: None,
        }
    }
}

/// What [`ServerConfig::admit`] learns about a client whose TLS handshake just completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Subject Common Name of the client certificate (`None` without one).
    pub identity: Option<String>,
    /// Serial number of the client certificate, lowercase hex of its bytes, no separators.
    pub cert_serial: Option<String>,
    /// End of the certificate's validity.
    pub not_after: Option<SystemTime>,
    /// The client's address.
    pub source: Option<SocketAddr>,
}

/// The hook of [`ServerConfig::admit`]: (peer) -> admitted.
#[derive(Clone)]
pub struct Admit(pub Arc<AdmitFn>);

/// The decision an [`Admit`] wraps.
pub type AdmitFn = dyn Fn(&PeerInfo) -> bool + Send + Sync;

impl Admit {
    /// Wraps a decision.
    pub fn new(f: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> Self {
        Admit(Arc::new(f))
    }

    /// Whether `peer` may go on.
    pub fn allows(&self, peer: &PeerInfo) -> bool {
        (self.0)(peer)
    }
}

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

/// How a Unix listener is created and what its connections carry
/// ([`crate::NbdServer::serve_unix_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListenerOptions {
    /// The identity every connection of this listener has for the [`Authorizer`] (a
    /// tenant's socket); `None` for the admin socket.
    pub identity: Option<String>,
    /// Permission bits of the socket file, set explicitly whatever the process umask.
    pub mode: u32,
    /// Owner (uid, gid) of the socket file; `None`: the process's.
    pub owner: Option<(u32, u32)>,
    /// Most connections of this listener at once (any phase); more are closed on accept.
    pub max_connections: usize,
}

impl Default for UnixListenerOptions {
    fn default() -> Self {
        UnixListenerOptions {
            identity: None,
            mode: 0o600,
            owner: None,
            max_connections: 64,
        }
    }
}
