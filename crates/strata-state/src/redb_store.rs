//! The embedded backend: one redb file holding the keys, a bounded change log and the
//! store revision. Every acknowledged transaction is in a durable redb commit, so a crash (also
//! `kill -9`) loses nothing that was acknowledged.
//!
//! Tables:
//! - `kv`: key -> `create_revision:u64 | mod_revision:u64 | value` (little-endian)
//! - `log`: revision -> the changes of that revision, `n:u32` then per change
//!   `key_len:u32 key kind:u8 (1 put, 0 delete) value_len:u32 value`
//! - `meta`: `"revision"`, `"oldest"` (the oldest revision the log still holds) and
//!   `"log_bytes"` (the encoded size of the log entries kept)
//!
//! # Group commit
//! A durable commit costs a device sync, the same for one transaction as for fifty. Writers
//! that arrive while a commit is running queue their transactions; the next writer to find no
//! commit running becomes the leader, applies every queued transaction in arrival order inside
//! one redb write transaction (each still checks its comparisons against the writes before it
//! and gets its own revision, exactly as if they had run one by one), commits once, and hands
//! each writer its own result. No writer returns before the commit that holds its writes.
//!
//! # History
//! The change log exists for watchers that fall behind. It keeps at most `history` revisions
//! and at most `history_bytes` of encoded changes, whichever binds first; older revisions are
//! dropped in the commit that pushes them out (`changes` from before then answers
//! [`StoreError::Compacted`]). Bounding the bytes matters because a revision carries whole
//! values: without it, a hot key with a large value fills the file.

use std::collections::HashMap;
use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::check::check_txn;
use crate::{Compare, Event, KeyValue, Op, Store, StoreError, Txn, TxnResult};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Revisions of history kept for watchers that fall behind.
pub const HISTORY: u64 = 10_000;
/// Bytes of encoded changes the history may hold.
pub const HISTORY_BYTES: u64 = 32 << 20;
/// Most transactions one group commit carries (a bound on the leader's work and memory).
pub const MAX_BATCH: usize = 256;
/// Mode of the store file, whatever the process umask: it holds every tenant's records.
pub const FILE_MODE: u32 = 0o600;

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
    /// Latest committed revision, for `wait`.
    rev: Mutex<u64>,
    changed: Condvar,
    /// Writers waiting for a group commit, and their results.
    group: Mutex<Group>,
    /// Signalled when a group commit finishes.
    committed: Condvar,
    /// Revisions of change log kept.
    history: u64,
    /// Bytes of change log kept.
    history_bytes: u64,
}

/// The group-commit queue.
#[derive(Default)]
struct Group {
    /// Transactions not yet taken by a leader, with their tickets.
    queue: Vec<(u64, Txn)>,
    /// Results of committed batches, by ticket, until their writers take them.
    done: HashMap<u64, Result<TxnResult, StoreError>>,
    /// A leader is committing a batch.
    busy: bool,
    next_ticket: u64,
    /// Batches committed and transactions in them (for tests and figures).
    batches: u64,
    batched: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &*self.rev.lock())
            .finish()
    }
}

fn be<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Corrupt(key.to_string()));
    }
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: u64::from_le_bytes(raw[0..8].try_into().expect("8")),
        mod_revision: u64::from_le_bytes(raw[8..16].try_into().expect("8")),
        value: raw[16..].to_vec(),
    })
}

fn decode_log(rev: u64, raw: &[u8], out: &mut Vec<Event>, prefix: &str) -> Result<(), StoreError> {
    let bad = || StoreError::Corrupt(format!("log revision {rev}"));
    let mut p = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let s = raw.get(p..p + n).ok_or_else(bad)?;
        p += n;
        Ok(s)
    };
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4"));
    for _ in 0..n {
        let kl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let key = std::str::from_utf8(take(kl)?)
            .map_err(|_| bad())?
            .to_string();
        let kind = take(1)?[0];
        let vl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let value = take(vl)?.to_vec();
        if key.starts_with(prefix) {
            out.push(Event {
                revision: rev,
                key,
                value: (kind == 1).then_some(value),
            });
        }
    }
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, keeping [`HISTORY`] revisions of change log.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_history(path, HISTORY)
    }

    /// Opens (or creates) the store, keeping `history` (at least 1) revisions of change log
    /// and at most [`HISTORY_BYTES`] of it.
    pub fn open_with_history(path: impl AsRef<Path>, history: u64) -> Result<Self, StoreError> {
        Self::open_with_limits(path, history, HISTORY_BYTES)
    }

    /// Opens (or creates) the store with both history bounds (each at least 1).
    ///
    /// The file is created with mode [`FILE_MODE`] and set to it on every open, whatever the
    /// umask, before redb writes anything.
    pub fn open_with_limits(
        path: impl AsRef<Path>,
        history: u64,
        history_bytes: u64,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        // The mode given to open is masked by the umask; set it exactly.
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        drop(f);
        let db = Database::create(path).map_err(be)?;
        let w = db.begin_write().map_err(be)?;
        let rev = {
            w.open_table(KV).map_err(be)?;
            w.open_table(LOG).map_err(be)?;
            let mut meta = w.open_table(META).map_err(be)?;
            let rev = meta.get("revision").map_err(be)?.map_or(0, |v| v.value());
            if meta.get("oldest").map_err(be)?.is_none() {
                meta.insert("oldest", 1).map_err(be)?;
            }
            rev
        };
        w.commit().map_err(be)?;
        let s = RedbStore {
            db,
            rev: Mutex::new(rev),
            changed: Condvar::new(),
            group: Mutex::new(Group::default()),
            committed: Condvar::new(),
            history: history.max(1),
            history_bytes: history_bytes.max(1),
        };
        // A store written with a longer history (or by an older version, which kept 100,000
        // revisions of whole values) is trimmed to this one's bounds now.
        let w = s.db.begin_write().map_err(be)?;
        s.trim_history(&w, rev)?;
        w.commit().map_err(be)?;
        Ok(s)
    }

    /// Group commits so far and the transactions they carried.
    pub fn group_commits(&self) -> (u64, u64) {
        let g = self.group.lock();
        (g.batches, g.batched)
    }

    /// Runs one batch inside one write transaction and commits it.
    fn commit_batch(&self, batch: &[(u64, Txn)]) -> Result<Vec<TxnResult>, StoreError> {
        let w = self.db.begin_write().map_err(be)?;
        let mut out = Vec::with_capacity(batch.len());
        let mut rev = {
            let meta = w.open_table(META).map_err(be)?;
            let r = meta.get("revision").map_err(be)?.map_or(0, |v| v.value());
            r
        };
        for (_, txn) in batch {
            let r = Self::apply_one(&w, txn, rev)?;
            rev = r.revision;
            out.push(r);
        }
        self.trim_history(&w, rev)?;
        w.commit().map_err(be)?;
        Ok(out)
    }

    /// Applies one transaction at store revision `cur` inside `w`.
    fn apply_one(w: &WriteTransaction, txn: &Txn, cur: u64) -> Result<TxnResult, StoreError> {
        let mut kv = w.open_table(KV).map_err(be)?;
        for c in &txn.compare {
            let Compare::ModRevision(k, want) = c;
            let have = match kv.get(k.as_str()).map_err(be)? {
                Some(v) => decode_kv(k, v.value())?.mod_revision,
                None => 0,
            };
            if have != *want {
                return Ok(TxnResult {
                    succeeded: false,
                    revision: cur,
                });
            }
        }
        if txn.success.is_empty() {
            return Ok(TxnResult {
                succeeded: true,
                revision: cur,
            });
        }
        let rev = cur + 1;
        // The count of changes is patched in at the end: deleting an absent key is no change
        // (as in etcd), and a transaction of nothing but such deletes keeps the revision.
        let mut log = vec![0u8; 4];
        let mut changes = 0u32;
        for op in &txn.success {
            let (k, v) = match op {
                Op::Put(k, v) => {
                    let created = match kv.get(k.as_str()).map_err(be)? {
                        Some(old) => decode_kv(k, old.value())?.create_revision,
                        None => rev,
                    };
                    let mut rec = Vec::with_capacity(16 + v.len());
                    rec.extend_from_slice(&created.to_le_bytes());
                    rec.extend_from_slice(&rev.to_le_bytes());
                    rec.extend_from_slice(v);
                    kv.insert(k.as_str(), rec.as_slice()).map_err(be)?;
                    (k, Some(v))
                }
                Op::PutLeased(..) => unreachable!("refused before the commit queue"),
                Op::Delete(k) => {
                    if kv.remove(k.as_str()).map_err(be)?.is_none() {
                        continue;
                    }
                    (k, None)
                }
            };
            changes += 1;
            log.extend_from_slice(&(k.len() as u32).to_le_bytes());
            log.extend_from_slice(k.as_bytes());
            log.push(u8::from(v.is_some()));
            let v: &[u8] = v.map_or(&[], |v| v.as_slice());
            log.extend_from_slice(&(v.len() as u32).to_le_bytes());
            log.extend_from_slice(v);
        }
        if changes == 0 {
            return Ok(TxnResult {
                succeeded: true,
                revision: cur,
            });
        }
        log[..4].copy_from_slice(&changes.to_le_bytes());
        let mut lt = w.open_table(LOG).map_err(be)?;
        lt.insert(rev, log.as_slice()).map_err(be)?;
        let mut meta = w.open_table(META).map_err(be)?;
        let bytes = meta.get("log_bytes").map_err(be)?.map_or(0, |v| v.value());
        meta.insert("log_bytes", bytes + log.len() as u64)
            .map_err(be)?;
        meta.insert("revision", rev).map_err(be)?;
        Ok(TxnResult {
            succeeded: true,
            revision: rev,
        })
    }

    /// Drops the oldest log revisions until both history bounds hold (the newest revision
    /// always stays, so a watcher at `rev - 1` can still follow).
    fn trim_history(&self, w: &WriteTransaction, rev: u64) -> Result<(), StoreError> {
        let mut meta = w.open_table(META).map_err(be)?;
        let mut lt = w.open_table(LOG).map_err(be)?;
        let mut oldest = meta.get("oldest").map_err(be)?.map_or(1, |v| v.value());
        let mut bytes = match meta.get("log_bytes").map_err(be)?.map(|v| v.value()) {
            Some(b) => b,
            // A store from before the byte bound: count what its log holds once.
            None => {
                let mut b = 0u64;
                for item in lt.iter().map_err(be)? {
                    let (_, v) = item.map_err(be)?;
                    b += v.value().len() as u64;
                }
                b
            }
        };
        while oldest < rev && (rev + 1 - oldest > self.history || bytes > self.history_bytes) {
            if let Some(old) = lt.remove(oldest).map_err(be)? {
                bytes = bytes.saturating_sub(old.value().len() as u64);
            }
            oldest += 1;
        }
        meta.insert("oldest", oldest).map_err(be)?;
        meta.insert("log_bytes", bytes).map_err(be)?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let t = r.open_table(KV).map_err(be)?;
        match t.get(key).map_err(be)? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let rev = r
            .open_table(META)
            .map_err(be)?
            .get("revision")
            .map_err(be)?
            .map_or(0, |v| v.value());
        let t = r.open_table(KV).map_err(be)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut out = Vec::new();
        for item in t.range(start..).map_err(be)? {
            let (k, v) = item.map_err(be)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if after == Some(k) {
                continue;
            }
            out.push(decode_kv(k, v.value())?);
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok((out, rev))
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        check_txn(&txn)?;
        if txn.success.iter().any(|op| matches!(op, Op::PutLeased(..))) {
            return Err(StoreError::Invalid(
                "leases need the etcd store (a cluster); the embedded store has none".into(),
            ));
        }
        let mut g = self.group.lock();
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queue.push((ticket, txn));
        loop {
            if let Some(r) = g.done.remove(&ticket) {
                return r;
            }
            if g.busy {
                self.committed.wait(&mut g);
                continue;
            }
            // Lead: take what is queued (ours included, unless an earlier leader took it).
            g.busy = true;
            let n = g.queue.len().min(MAX_BATCH);
            let batch: Vec<(u64, Txn)> = g.queue.drain(..n).collect();
            drop(g);
            let result = self.commit_batch(&batch);
            let top = match &result {
                Ok(rs) => rs.last().map(|r| r.revision),
                Err(_) => None,
            };
            g = self.group.lock();
            g.batches += 1;
            g.batched += batch.len() as u64;
            match result {
                Ok(rs) => {
                    for ((t, _), r) in batch.iter().zip(rs) {
                        g.done.insert(*t, Ok(r));
                    }
                }
                Err(e) => {
                    for (t, _) in &batch {
                        g.done.insert(*t, Err(e.clone()));
                    }
                }
            }
            g.busy = false;
            self.committed.notify_all();
            if let Some(top) = top {
                let mut r = self.rev.lock();
                if top > *r {
                    *r = top;
                    self.changed.notify_all();
                }
            }
        }
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(*self.rev.lock())
    }

    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let oldest = r
            .open_table(META)
            .map_err(be)?
            .get("oldest")
            .map_err(be)?
            .map_or(1, |v| v.value());
        if after + 1 < oldest {
            return Err(StoreError::Compacted {
                requested: after + 1,
                oldest,
            });
        }
        let t = r.open_table(LOG).map_err(be)?;
        let mut out = Vec::new();
        for item in t.range(after + 1..).map_err(be)? {
            let (rev, raw) = item.map_err(be)?;
            decode_log(rev.value(), raw.value(), &mut out, prefix)?;
            // Stop only at a revision boundary: a caller resumes after the last revision it
            // saw, so a revision must never be split.
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn wait(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut r = self.rev.lock();
        while *r <= after {
            if self.changed.wait_until(&mut r, deadline).timed_out() {
                break;
            }
        }
        Ok(*r)
    }
}
