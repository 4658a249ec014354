//! Strata's NBD export: the NBD wire protocol and a server that exports volumes (read-write)
//! and snapshots (read-only) to unchanged NBD clients (qemu-img, qemu-io, nbdcopy, nbdinfo,
//! fio, the kernel's nbd-client). Where the bytes live is an [`ExportSource`]'s business: one
//! `strata-block` pool ([`PoolSource`]), or whatever the control plane builds over several.
//!
//! Layers, pure first:
//! - [`proto`]: wire formats (no I/O), validated before use.
//! - [`state`]: the connection state machine as a transition table.
//! - [`negotiate`]: option haggling, bytes in and bytes out.
//! - [`backend`]: the traits every export source implements ([`ExportSource`], [`ExportIo`]).
//! - [`pool_source`]: the source over one engine pool.
//! - [`export`]: export names and metadata contexts over a source.
//! - [`transmit`]: one request in, its reply out, over the session's export.
//! - [`framing`]: the one request decoder and framing loop (sockets, TLS, replay).
//! - [`tls`]: the rustls configuration, the handshake, client certificates.
//! - [`config`]: limits, timeouts and hooks the daemon sets.
//! - [`registry`]: open connections, their budgets and sessions.
//! - `socket` (private): a socket with the read deadline and write timeout built in.
//! - `context` (private): what every connection of a server shares.
//! - [`conn`] and [`server`]: connections, listeners, shutdown.
//! - [`client`]: the client side (one node reaching a copy on another), over TCP with TLS.
//!
//! The design note with byte layouts and the concurrency model is `docs/nbd.md`.
//!
//! ```no_run
//! use strata_nbd::NbdServer;
//! # fn f(pool: strata_block::Pool) -> Result<(), strata_nbd::ServeError> {
//! let server = NbdServer::new(pool);
//! server.serve_unix("/tmp/strata-nbd.sock")?;
//! // qemu-img info 'nbd+unix:///myvolume?socket=/tmp/strata-nbd.sock'
//! server.shutdown();
//! # Ok(()) }
//! ```

pub mod backend;
pub mod client;
pub mod config;
pub mod conn;
mod context;
pub mod export;
pub mod framing;
pub mod negotiate;
pub mod pool_source;
pub mod proto;
pub mod registry;
pub mod server;
mod socket;
pub mod state;
pub mod tls;
pub mod transmit;

pub use backend::{ExportIo, ExportSource, Runs, SinceToken};
pub use config::{Admit, PeerInfo, ServerConfig, UnixListenerOptions};
pub use export::{Authorizer, Catalog, Export, ExportFilter, MetaContext, SnapshotNames};
pub use negotiate::{HandshakeError, Negotiator, Session, Step, TlsMode};
pub use pool_source::PoolSource;
pub use registry::SessionInfo;
pub use server::{NbdServer, ServeError};
pub use tls::{cert_info, client_identity, tls_server_config, CertInfo, TlsConfigError};
pub use transmit::Stats;
