//! What every connection of a server shares: the catalog of exports, the configuration, the
//! counters, the shutdown flag and the connection registry. Its own file so that the
//! connection code ([`crate::conn`]) and the server ([`crate::server`]) both depend on it and
//! not on each other.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::export::Catalog;
use crate::registry::Registry;
use crate::transmit::Stats;

/// The shared context of a server's connections.
pub(crate) struct Shared {
    pub(crate) catalog: Catalog,
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) registry: Registry,
}
