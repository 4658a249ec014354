//! The control plane's state store.
//!
//! [`Store`] is shaped after etcd's v3 model so that a cluster can move from the embedded
//! backend to etcd without changing a caller: every write bumps one store-wide revision; each
//! key remembers the revision that created it and the one that last changed it; a transaction
//! applies its writes only if every comparison of a key's `mod_revision` holds (0 = "absent");
//! a watch replays every change after a given revision, then follows live changes.
//!
//! A transaction that changes nothing (its comparisons fail, it has no writes, or it only
//! deletes absent keys) does not move the revision.
//!
//! [`RedbStore`] keeps keys, values and a bounded change history in one redb file; each
//! transaction is one durable redb commit. [`EtcdStore`] keeps them in an etcd cluster under a
//! root prefix, with etcd's revisions and history. Both refuse the same bad input
//! ([`MAX_KEY`], [`MAX_VALUE`]) before anything is written.

mod check;
mod etcd_store;
mod redb_store;

pub use check::{MAX_KEY, MAX_VALUE};
pub use etcd_store::{EtcdConfig, EtcdStore, DEFAULT_ROOT, DEFAULT_TIMEOUT};
pub use redb_store::RedbStore;

use thiserror::Error;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the write that last changed it.
    pub mod_revision: u64,
}

/// A condition a transaction checks before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod_revision equals this (0: the key does not exist).
    ModRevision(String, u64),
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets a key.
    Put(String, Vec<u8>),
    /// Sets a key that lives only as long as the lease ([`Leases`]): when the lease expires or
    /// is revoked, the store deletes the key (one event per key, as for a delete). Only
    /// stores with leases take it; the others refuse the transaction as `Invalid`.
    PutLeased(String, Vec<u8>, LeaseId),
    /// Removes a key (no-op if absent).
    Delete(String),
}

impl Op {
    /// The key it writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) => k,
        }
    }
}

/// A lease: keys put with it are deleted when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

/// A compare-then-write transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions; all must hold.
    pub compare: Vec<Compare>,
    /// Writes applied if they hold.
    pub success: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requires `key` to be at `rev` (0: absent).
    pub fn when(mut self, key: impl Into<String>, rev: u64) -> Self {
        self.compare.push(Compare::ModRevision(key.into(), rev));
        self
    }
    /// Puts `key`.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.success.push(Op::Put(key.into(), value.into()));
        self
    }
    /// Puts `key`, living as long as `lease` does.
    pub fn put_leased(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        self.success
            .push(Op::PutLeased(key.into(), value.into(), lease));
        self
    }
    /// Deletes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.success.push(Op::Delete(key.into()));
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the comparisons held (and the writes were applied).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: u64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Revision of the change.
    pub revision: u64,
    /// The key.
    pub key: String,
    /// The new value, or None for a deletion.
    pub value: Option<Vec<u8>>,
}

/// Store failures. `Clone`, so one failed group commit can answer each of its writers.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("state store: {0}")]
    Backend(String),
    /// A watch asked for history older than what is kept.
    #[error("revision {requested} has been compacted (oldest kept: {oldest})")]
    Compacted {
        /// Requested revision.
        requested: u64,
        /// Oldest revision still in the history.
        oldest: u64,
    },
    /// A stored record is damaged.
    #[error("state store record for {0:?} is damaged")]
    Corrupt(String),
    /// A key or value is not acceptable.
    #[error("invalid key or value: {0}")]
    Invalid(String),
}

/// The store interface every backend implements.
pub trait Store: Send + Sync {
    /// One key.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Keys starting with `prefix`, in key order, starting after `after` (for pagination),
    /// at most `limit` (0: no limit); with the store revision they were read at.
    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError>;
    /// Applies a transaction atomically and durably.
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;
    /// The current revision.
    fn revision(&self) -> Result<u64, StoreError>;
    /// Changes to keys under `prefix` with revision > `after`, oldest first; stops after the
    /// revision at which `limit` events are reached (0: no limit), never inside a revision.
    /// Call again with the last revision seen to follow; [`Store::wait`] blocks for new ones.
    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// Blocks until the revision exceeds `after` or `timeout` passes; returns the revision.
    fn wait(&self, after: u64, timeout: std::time::Duration) -> Result<u64, StoreError>;
    /// The store's leases, where it has them (etcd); `None` on a store of one machine.
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
}

/// Leases, for what must vanish when its owner stops (a node's liveness key, a leader's
/// claim): etcd's leases. Only the etcd backend has them: on one machine the daemon is the
/// only process, so nothing waits for it to disappear (`docs/cluster.md`).
pub trait Leases: Store {
    /// A new lease that expires `ttl` after its last keep-alive (etcd rounds to whole
    /// seconds, at least 1).
    fn grant(&self, ttl: std::time::Duration) -> Result<LeaseId, StoreError>;
    /// Renews the lease; `None` if it has already expired or been revoked (its keys are gone).
    fn keep_alive(&self, lease: LeaseId) -> Result<Option<std::time::Duration>, StoreError>;
    /// Ends the lease now, deleting its keys; a lease already gone is not an error.
    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
}

/// A shared store is a store: a test (or a process) can keep a handle on the store it gave the
/// controller, to look at it or to wrap it.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        (**self).get(key)
    }
    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        (**self).range(prefix, after, limit)
    }
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        (**self).txn(txn)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        (**self).revision()
    }
    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        (**self).changes(prefix, after, limit)
    }
    fn wait(&self, after: u64, timeout: std::time::Duration) -> Result<u64, StoreError> {
        (**self).wait(after, timeout)
    }
    fn leases(&self) -> Option<&dyn Leases> {
        (**self).leases()
    }
}

/// Convenience: put a key unconditionally.
pub fn put(store: &dyn Store, key: &str, value: &[u8]) -> Result<u64, StoreError> {
    Ok(store.txn(Txn::new().put(key, value))?.revision)
}
