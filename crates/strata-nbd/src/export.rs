//! What a client can open: exports resolved through an [`ExportSource`] (one engine pool, or
//! whatever the daemon serves: [`crate::backend`]), and the metadata contexts each export
//! offers. The catalog layers the daemon's filter, authorizer and snapshot names over the
//! source; the source knows only its own names.
//!
//! Export names: `VOLUME` is the writable volume; `VOLUME@SNAPSHOT` is a snapshot, exported
//! read-only. Engine names never contain `@`, so the split is unambiguous.
//!
//! Metadata contexts:
//! - `base:allocation` (the spec's): `NBD_STATE_HOLE | NBD_STATE_ZERO` for unallocated space,
//!   0 for allocated blocks.
//! - `strata:changed-since:SNAPSHOT` (volume exports only): flag [`STATE_CHANGED`] on blocks
//!   whose content may differ from snapshot `SNAPSHOT` of the same volume (incremental backup).

use std::sync::Arc;

use strata_block::Pool;

use crate::backend::{ExportIo, ExportSource, SinceToken};
use crate::pool_source::PoolSource;

use crate::proto::{
    MAX_STRING, TF_CAN_MULTI_CONN, TF_HAS_FLAGS, TF_READ_ONLY, TF_SEND_CACHE, TF_SEND_DF,
    TF_SEND_FAST_ZERO, TF_SEND_FLUSH, TF_SEND_FUA, TF_SEND_TRIM, TF_SEND_WRITE_ZEROES,
};

/// The spec's allocation context.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Our namespace.
pub const STRATA_NAMESPACE: &str = "strata:";
/// Prefix of the changed-since contexts; the snapshot name follows.
pub const CHANGED_SINCE_PREFIX: &str = "strata:changed-since:";
/// `strata:changed-since:*` flag: the block may differ from the snapshot.
pub const STATE_CHANGED: u32 = 1;
/// Most contexts one connection may select.
pub const MAX_CONTEXTS: usize = 16;

/// A resolved export: its name and the I/O the source opened for it (once, shared by every
/// request of the session).
#[derive(Debug, Clone)]
pub struct Export {
    /// The name the client used.
    pub name: String,
    /// The opened volume or snapshot.
    pub io: Arc<dyn ExportIo>,
    /// Size in bytes when the export was opened.
    pub size: u64,
    /// Snapshots are read-only.
    pub read_only: bool,
}

impl Export {
    /// Transmission flags for this export.
    pub fn flags(&self, structured: bool) -> u16 {
        let mut f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_CAN_MULTI_CONN | TF_SEND_CACHE;
        if self.read_only {
            f |= TF_READ_ONLY;
        } else {
            f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_SEND_FAST_ZERO;
        }
        if structured {
            f |= TF_SEND_DF;
        }
        f
    }

    /// A one-line description (`NBD_INFO_DESCRIPTION`).
    pub fn description(&self) -> String {
        if self.read_only {
            format!("strata snapshot {} (read-only)", self.name)
        } else {
            format!("strata volume {}", self.name)
        }
    }
}

/// A selected metadata context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaContext {
    /// `base:allocation`.
    BaseAllocation,
    /// `strata:changed-since:NAME`.
    ChangedSince {
        /// Snapshot name.
        name: String,
        /// The snapshot, as the export's source resolved it.
        since: SinceToken,
    },
}

impl MetaContext {
    /// The context's wire name.
    pub fn name(&self) -> String {
        match self {
            MetaContext::BaseAllocation => BASE_ALLOCATION.to_string(),
            MetaContext::ChangedSince { name, .. } => format!("{CHANGED_SINCE_PREFIX}{name}"),
        }
    }
}

/// Decides which volumes (by name) a server exports; a snapshot is exported when its volume
/// is. The daemon uses it to serve attached volumes only.
#[derive(Clone)]
pub struct ExportFilter(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for ExportFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportFilter")
    }
}

/// Decides whether a client may open an export: called with the export name as the client
/// sent it (`VOLUME` or `VOLUME@SNAPSHOT`) and the client's identity — the Subject Common
/// Name of its verified TLS certificate, `None` on a connection without TLS (or a TLS client
/// without a certificate, if the TLS configuration allows one). An export it refuses looks
/// exactly like one that does not exist: `NBD_REP_ERR_UNKNOWN`, absent from `NBD_OPT_LIST`.
///
/// ```
/// # use std::sync::Arc;
/// // Tenant `acme` owns the volumes named `acme-*`, and their snapshots.
/// let a = strata_nbd::Authorizer::new(|export: &str, client: Option<&str>| {
///     let volume = export.split('@').next().unwrap_or(export);
///     client.is_some_and(|c| volume.strip_prefix(c).is_some_and(|r| r.starts_with('-')))
/// });
/// assert!(a.allows("acme-db@monday", Some("acme")));
/// assert!(!a.allows("acme-db", None) && !a.allows("other-db", Some("acme")));
/// ```
#[derive(Clone)]
pub struct Authorizer(pub std::sync::Arc<AuthorizeFn>);

/// The decision an [`Authorizer`] wraps: (export name, client identity) -> allowed.
pub type AuthorizeFn = dyn Fn(&str, Option<&str>) -> bool + Send + Sync;

impl Authorizer {
    /// Wraps a decision function.
    pub fn new(f: impl Fn(&str, Option<&str>) -> bool + Send + Sync + 'static) -> Self {
        Authorizer(std::sync::Arc::new(f))
    }

    /// Whether `client` may open `export`.
    pub fn allows(&self, export: &str, client: Option<&str>) -> bool {
        (self.0)(export, client)
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorizer")
    }
}

/// Maps (volume's engine name, snapshot name as a client sent it) to the engine's snapshot
/// name, or `None` when it knows no such name (the name is then tried as the engine's own).
#[derive(Clone)]
pub struct SnapshotNames(pub std::sync::Arc<SnapshotNamesFn>);

/// The mapping a [`SnapshotNames`] wraps.
pub type SnapshotNamesFn = dyn Fn(&str, &str) -> Option<String> + Send + Sync;

impl SnapshotNames {
    /// Wraps a mapping function.
    pub fn new(f: impl Fn(&str, &str) -> Option<String> + Send + Sync + 'static) -> Self {
        SnapshotNames(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for SnapshotNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotNames")
    }
}

/// The exports of one source, as the daemon's hooks let clients see them.
#[derive(Debug, Clone)]
pub struct Catalog {
    source: Arc<dyn ExportSource>,
    filter: Option<ExportFilter>,
    authorize: Option<Authorizer>,
    snapshot_names: Option<SnapshotNames>,
}

impl Catalog {
    /// Exports every volume and snapshot of `pool` ([`PoolSource`]).
    pub fn new(pool: Pool) -> Self {
        Self::from_source(Arc::new(PoolSource::new(pool)))
    }

    /// Exports the volumes of `pool` that `filter` admits (and their snapshots).
    pub fn with_filter(pool: Pool, filter: Option<ExportFilter>) -> Self {
        Self::new(pool).filtered(filter)
    }

    /// Exports every volume and snapshot `source` resolves.
    pub fn from_source(source: Arc<dyn ExportSource>) -> Self {
        Catalog {
            source,
            filter: None,
            authorize: None,
            snapshot_names: None,
        }
    }

    /// The same exports, only the volumes `filter` admits (and their snapshots).
    pub fn filtered(mut self, filter: Option<ExportFilter>) -> Self {
        self.filter = filter;
        self
    }

    /// The same exports, each also subject to `authorize` for the client asking.
    pub fn with_authorizer(mut self, authorize: Option<Authorizer>) -> Self {
        self.authorize = authorize;
        self
    }

    /// The same exports, with snapshot names resolved by `names` (see [`SnapshotNames`]).
    pub fn with_snapshot_names(mut self, names: Option<SnapshotNames>) -> Self {
        self.snapshot_names = names;
        self
    }

    /// Resolves the snapshot `name` of volume `volume` with `find` (which takes the source's
    /// own name): the name mapped through [`SnapshotNames`] if it knows it and `find` finds
    /// that, else the name taken as the source's own.
    fn snapshot<T>(&self, volume: &str, name: &str, find: impl Fn(&str) -> Option<T>) -> Option<T> {
        if let Some(engine) = self
            .snapshot_names
            .as_ref()
            .and_then(|n| (n.0)(volume, name))
        {
            if let Some(t) = find(&engine) {
                return Some(t);
            }
        }
        find(name)
    }

    fn admits(&self, volume: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| (f.0)(volume))
    }

    fn authorized(&self, export: &str, client: Option<&str>) -> bool {
        self.authorize
            .as_ref()
            .is_none_or(|a| a.allows(export, client))
    }

    /// The source behind the exports.
    pub fn source(&self) -> &Arc<dyn ExportSource> {
        &self.source
    }

    /// Resolves an export name for a client without an identity; `None` if it names nothing
    /// (or nothing that client may open).
    pub fn lookup(&self, name: &str) -> Option<Export> {
        self.lookup_as(name, None)
    }

    /// Resolves an export name for `client` (see [`Authorizer`]); `None` if it names nothing
    /// or nothing this client may open — the two are indistinguishable on purpose.
    pub fn lookup_as(&self, name: &str, client: Option<&str>) -> Option<Export> {
        if name.is_empty() || name.len() > MAX_STRING {
            return None;
        }
        if !self.authorized(name, client) {
            return None;
        }
        let (vol_name, snap_name) = match name.split_once('@') {
            Some((v, s)) => (v, Some(s)),
            None => (name, None),
        };
        if !self.admits(vol_name) {
            return None;
        }
        let io = match snap_name {
            None => self.source.open(vol_name, None)?,
            Some(s) => self.snapshot(vol_name, s, |s| self.source.open(vol_name, Some(s)))?,
        };
        Some(Export {
            name: name.to_string(),
            size: io.size(),
            io,
            read_only: snap_name.is_some(),
        })
    }

    /// Every export name a client without an identity may open: volumes, then
    /// `volume@snapshot` for each snapshot.
    pub fn list(&self) -> Vec<String> {
        self.list_as(None)
    }

    /// Every export name `client` may open (see [`Authorizer`]).
    pub fn list_as(&self, client: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for (volume, snapshots) in self.source.list() {
            if !self.admits(&volume) {
                continue;
            }
            if self.authorized(&volume, client) {
                out.push(volume.clone());
            }
            for s in snapshots {
                let name = format!("{volume}@{s}");
                if self.authorized(&name, client) {
                    out.push(name);
                }
            }
        }
        out
    }

    fn changed_since_all(&self, e: &Export) -> Vec<MetaContext> {
        if e.read_only {
            return Vec::new();
        }
        e.io.since_all()
            .into_iter()
            .map(|(name, since)| MetaContext::ChangedSince { name, since })
            .collect()
    }

    /// The contexts `query` selects on `e`. With `list`, namespace wildcards (`base:`,
    /// `strata:`, `strata:changed-since:`) select every context in them, as
    /// `NBD_OPT_LIST_META_CONTEXT` allows; `NBD_OPT_SET_META_CONTEXT` takes exact names only.
    /// Unknown namespaces select nothing (that is not an error: qemu probes `qemu:` contexts).
    pub fn contexts_for(&self, e: &Export, query: &str, list: bool) -> Vec<MetaContext> {
        if query == BASE_ALLOCATION || (list && query == "base:") {
            return vec![MetaContext::BaseAllocation];
        }
        if list && (query == STRATA_NAMESPACE || query == CHANGED_SINCE_PREFIX) {
            return self.changed_since_all(e);
        }
        if let Some(snap) = query.strip_prefix(CHANGED_SINCE_PREFIX) {
            if e.read_only || snap.is_empty() {
                return Vec::new();
            }
            // Writable exports are named by their volume alone.
            if let Some(since) = self.snapshot(&e.name, snap, |s| e.io.since(s)) {
                return vec![MetaContext::ChangedSince {
                    name: snap.to_string(),
                    since,
                }];
            }
        }
        Vec::new()
    }

    /// Every context `e` offers (a LIST with no query).
    pub fn all_contexts(&self, e: &Export) -> Vec<MetaContext> {
        let mut v = vec![MetaContext::BaseAllocation];
        v.extend(self.changed_since_all(e));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_hides_volumes_and_their_snapshots() {
        let dev = strata_block::MemDevice::new(32 << 20, "m");
        let pool = Pool::create(vec![strata_block::DeviceSpec {
            device: dev,
            class: strata_types::DeviceClass::Ssd,
        }])
        .unwrap();
        let a = pool.create_volume("a", 1 << 20, None).unwrap();
        let b = pool.create_volume("b", 1 << 20, None).unwrap();
        pool.create_snapshot(a, "s").unwrap();
        pool.create_snapshot(b, "s").unwrap();
        let f = ExportFilter(std::sync::Arc::new(|n: &str| n == "a"));
        let c = Catalog::with_filter(pool, Some(f));
        assert!(c.lookup("a").is_some() && c.lookup("a@s").is_some());
        assert!(c.lookup("b").is_none() && c.lookup("b@s").is_none());
        assert_eq!(c.list(), vec!["a".to_string(), "a@s".to_string()]);
    }

    #[test]
    fn authorizer_hides_exports_per_client() {
        let dev = strata_block::MemDevice::new(32 << 20, "m");
        let pool = Pool::create(vec![strata_block::DeviceSpec {
            device: dev,
            class: strata_types::DeviceClass::Ssd,
        }])
        .unwrap();
        let a = pool.create_volume("acme", 1 << 20, None).unwrap();
        pool.create_volume("other", 1 << 20, None).unwrap();
        pool.create_volume("public", 1 << 20, None).unwrap();
        pool.create_snapshot(a, "s").unwrap();
        let auth = Authorizer::new(|export: &str, client: Option<&str>| {
            let vol = export.split('@').next().unwrap_or(export);
            vol == "public" || Some(vol) == client
        });
        let c = Catalog::new(pool).with_authorizer(Some(auth));
        assert!(c.lookup_as("acme", Some("acme")).is_some());
        assert!(c.lookup_as("acme@s", Some("acme")).is_some());
        assert!(c.lookup_as("other", Some("acme")).is_none());
        assert!(c.lookup("acme").is_none() && c.lookup("public").is_some());
        assert_eq!(c.list_as(Some("acme")), ["acme", "acme@s", "public"]);
        assert_eq!(c.list_as(Some("other")), ["other", "public"]);
        assert_eq!(c.list(), ["public"]);
    }
}
