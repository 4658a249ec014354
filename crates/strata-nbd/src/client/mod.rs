//! An NBD client: what one Strata node uses to reach a copy of a volume that lives on another
//! node (docs/cluster.md, "A remote copy is an NBD export with mutual TLS"). It speaks the
//! fixed newstyle handshake with `NBD_OPT_STARTTLS` and `NBD_OPT_GO`, then simple replies, to
//! any NBD server (Strata's own, qemu-nbd, nbdkit).
//!
//! Layers, pure first:
//! - [`haggle`]: the handshake's bytes, built and parsed without I/O (fuzzed).
//! - [`tls`]: the rustls client configuration (node certificate, cluster CA).
//! - [`conn`]: one connection: connect, haggle, then one request at a time.
//! - [`pool`]: several connections to one export (NBD multi-conn), so one TLS stream on one
//!   thread is not the limit, and a broken connection is replaced on the next request.
//!
//! # Invariants
//! - Every socket read and write has a timeout ([`ClientConfig::io_timeout`]): a peer that
//!   stops answering (a killed or partitioned node) fails the request, never hangs it.
//! - A request larger than the server's maximum block size is split; a reply whose handle is
//!   not the request's, or whose magic is wrong, ends the connection (the stream can no
//!   longer be trusted to be framed) and fails the request with [`ClientError::Proto`].
//! - A server error reply fails only its request, with the server's errno kept
//!   ([`ClientError::Server`]); the connection stays usable.

pub mod conn;
pub mod haggle;
pub mod pool;
pub mod tls;

use std::time::Duration;

use thiserror::Error;

pub use conn::{replay_handshake, Connection, Target};
pub use haggle::ExportInfo;
pub use pool::ClientPool;
pub use tls::{tls_client_config, ClientTls};

/// Why a client operation failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket failed or timed out.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The server broke the protocol (bad magic, a reply to another request, a length out of
    /// bounds): the connection is closed.
    #[error("protocol: {0}")]
    Proto(String),
    /// The server refused an option (`NBD_REP_ERR_*`), with its message.
    #[error("server refused option {option}: reply {reply:#x}: {message}")]
    Refused {
        /// Option number.
        option: u32,
        /// Reply type (an error type).
        reply: u32,
        /// The server's message, if any.
        message: String,
    },
    /// The server answered a request with an errno (`EIO`, `EPERM`, `ENOSPC`...).
    #[error("server answered errno {0}")]
    Server(u32),
    /// The TLS handshake or a TLS record failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A request the export cannot take (out of bounds, a write to a read-only export).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// True when the connection cannot be used again (everything but a server's errno and an
    /// invalid request refused before it was sent).
    pub fn breaks_connection(&self) -> bool {
        !matches!(self, ClientError::Server(_) | ClientError::Invalid(_))
    }
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Timeout of each socket read and write, and of connecting.
    pub io_timeout: Duration,
    /// TLS, required when set (`NBD_OPT_STARTTLS` first; a server without TLS is refused).
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            io_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}
